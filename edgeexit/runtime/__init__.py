"""Run an early-exit bundle: one exit loop over every backend (onnxruntime, torch .pt2, and the edge runtimes)."""

from edgeexit.runtime.backend import (
           BACKENDS,
           Backend,
           Segment,
           default_backend,
           make_backend,
)
from edgeexit.runtime.loop import EarlyExitRuntime, ModelRunner, RunResult, check_input

__all__ = ["BACKENDS", "Backend", "EarlyExitRuntime", "ModelRunner", "RunResult", "Segment", "check_input",
           "default_backend", "make_backend"]
