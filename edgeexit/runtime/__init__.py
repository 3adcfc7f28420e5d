"""Run an early-exit bundle: one exit loop over every backend."""

from edgeexit.runtime.backends import BACKENDS, OrtModel, OrtSegment, TorchSegment, ort_session_options
from edgeexit.runtime.loop import EarlyExitRuntime, RunResult

__all__ = ["BACKENDS", "EarlyExitRuntime", "OrtModel", "OrtSegment", "RunResult", "TorchSegment", "ort_session_options"]
