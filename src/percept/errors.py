"""Errors that the CLI turns into one line on stderr and exit status 2."""

from __future__ import annotations


class PerceptError(Exception):
    """A user-facing error: bad input, missing weights, an unavailable codec. One line, no traceback."""


class CodecError(PerceptError):
    """Unknown codec, out-of-range quality, or a codec that is not available on this machine."""


class ContainerError(PerceptError):
    """A file that is not a valid percept container (empty, truncated, wrong magic, bad CRC, ...)."""


class WeightsUnavailable(PerceptError):
    """Pretrained weights are neither cached nor downloadable; the message says how to supply them."""


class MetricUnavailable(PerceptError):
    """A metric cannot be computed here (missing weights or package); the message says what to supply."""
