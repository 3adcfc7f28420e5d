"""Early-exit networks: backbone adapters, exit placement and heads.

The names below are imported on first use (PEP 562), so that `edgeexit.models.catalog` (what `edgeexit backbones`
lists) is read without importing torch. No submodule may share a name below: importing a submodule binds its name
on this package, and the module would then shadow the function (why the adapters live in `adapters.py`)."""

from __future__ import annotations

import importlib

_WHERE = {
    "Backbone": "edgeexit.models.adapters",
    "HEAD_KINDS": "edgeexit.models.build", "ModelConfig": "edgeexit.models.build", "backbone": "edgeexit.models.build",
    "build_model": "edgeexit.models.build", "exit_blocks": "edgeexit.models.build",
    "list_backbones": "edgeexit.models.build",
    "EarlyExitNet": "edgeexit.models.net", "ExitSegment": "edgeexit.models.net", "UnsplitModel": "edgeexit.models.net",
    "from_sequential": "edgeexit.models.small_families",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'edgeexit.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # once
    return value
