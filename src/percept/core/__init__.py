"""The foundation every other layer builds on: noise schedules, samplers with one signature, the
denoiser contract and its wrappers (tiling, projection), image I/O and the run's provenance.

Nothing here knows about codecs, models on disk, calibration or training.
"""
