"""Lowering to `.pt2` (torch.export.save): the programs themselves, run by the torch backend."""

from __future__ import annotations

from pathlib import Path

import torch

from edgeexit.bundle import SegmentRef
from edgeexit.export.split import Program

FORMAT = "pt2"
PRECISIONS = ("fp32", "int8")  # an int8 program is the quantized (q/dq) program itself


def lower_programs(programs: list[Program], root: Path, *, precision: str = "fp32", **_) -> dict[str, SegmentRef]:
    """pt2/<name>.pt2 for every program."""
    refs = {}
    for p in programs:
        path = Path(root) / FORMAT / f"{p.name}.pt2"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.export.save(p.program, str(path))
        refs[p.name] = SegmentRef(file=path.relative_to(root).as_posix())
    return refs
