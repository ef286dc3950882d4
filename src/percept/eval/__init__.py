"""Evaluation built on the harness (`percept.eval.harness`): reports that read its results files."""
