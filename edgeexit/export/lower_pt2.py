"""Lowering to `.pt2` (torch.export.save): the programs themselves, run by the torch backend."""

from __future__ import annotations

from pathlib import Path

import torch

from edgeexit.export.split import Program

PRECISIONS = ("fp32",)


def lower_pt2(p: Program, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(p.program, str(path))
    return path
