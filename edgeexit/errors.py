"""Errors edgeexit raises for bad input.

Every message says what failed, what it got, what was expected and a hint, in that order, so that a
user can act on it without reading the source.
"""

from __future__ import annotations


class EdgeExitError(Exception):
    """Base of every error edgeexit raises on purpose."""

    def __init__(self, what: str, *, got: object = None, expected: object = None, hint: str | None = None):
        self.what, self.got, self.expected, self.hint = what, got, expected, hint
        parts = [what]
        if got is not None:
            parts.append(f"got: {got}")
        if expected is not None:
            parts.append(f"expected: {expected}")
        if hint:
            parts.append(f"hint: {hint}")
        super().__init__(" | ".join(parts))


class ConfigError(EdgeExitError):
    """A configuration value, option or name is not valid."""


class DatasetError(EdgeExitError):
    """A dataset is missing, empty or malformed."""


class ShapeError(EdgeExitError):
    """An input has the wrong shape, dtype, or holds NaN/inf."""


class CheckpointError(EdgeExitError):
    """A checkpoint is corrupt, incomplete or does not match the model."""


class BundleError(EdgeExitError):
    """A bundle is missing files, has a bad schema, or was tampered with."""


class BudgetError(EdgeExitError):
    """A budget cannot be met, or calibration data cannot support it."""


class RuntimeMissingError(EdgeExitError):
    """An optional runtime (ExecuTorch, TensorRT, CUDA) is not installed or has no device."""


class ExportError(EdgeExitError):
    """Export produced a graph that does not match torch."""


class DeviceError(EdgeExitError):
    """A device cannot be reached, or the runner on it failed."""
