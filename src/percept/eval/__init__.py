"""Evaluation built on the harness (`percept.evaluate`): reports that read its results files."""
