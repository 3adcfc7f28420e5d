"""Run an early-exit bundle: one exit loop over every backend (onnxruntime, torch .pt2, and the edge runtimes).

Names are imported on first use (PEP 562), so `edgeexit.runtime.registry` (what the CLI's help reads) costs no
numpy or pydantic import."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "BACKENDS": "backend", "Backend": "backend", "Segment": "backend", "default_backend": "backend",
    "make_backend": "backend",
    "REGISTRY": "registry", "Availability": "registry", "BackendSpec": "registry", "available_backends": "registry",
    "backends_for": "registry",
    "EarlyExitRuntime": "loop", "ModelRunner": "loop", "RunResult": "loop", "check_input": "loop",
}
__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    from edgeexit.runtime.backend import BACKENDS, Backend, Segment, default_backend, make_backend  # noqa: F401
    from edgeexit.runtime.loop import EarlyExitRuntime, ModelRunner, RunResult, check_input  # noqa: F401
    from edgeexit.runtime.registry import REGISTRY, Availability, BackendSpec, available_backends, backends_for  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
