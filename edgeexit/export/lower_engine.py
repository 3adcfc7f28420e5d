"""The `engine` lowering: TensorRT engines, one per program (segment, probe, reference), each with an optimisation
profile over the target's batch range.

Engines are device-specific, so `edgeexit export` never builds them (`BUILT_ON_DEVICE`): a TensorRT target's bundle
carries the ONNX segments, and `edgeexit engines RUN/bundle` (edgeexit/engines.py), run on the Jetson or GPU host,
verifies that bundle and builds the engines into a new version of it. `lower_programs` builds them straight from
split programs where TensorRT can build here (a GPU, or TensorRT-RTX in CPU-only mode), for tests and tools.

The pieces live in modules named for their jobs: TensorRT's ONNX parse report (trt_parse.py), the fp16 rewrite
(fp16_onnx.py), the engine build (engine_build.py); CUDA/TensorRT discovery (runtime/trt_device.py) and the engine
record (runtime/engine_record.py) are on the runtime side, which imports nothing from here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

from edgeexit.bundle import SegmentRef
from edgeexit.errors import ExportError
from edgeexit.export.engine_build import PRECISIONS, BuiltEngine, build_engine, write_engines
from edgeexit.runtime.engine_record import builder_record
from edgeexit.runtime.trt_device import flavour_of, tensorrt

FORMAT = "engine"
BUILT_ON_DEVICE = True  # export ships the ONNX; `edgeexit engines` builds the engines where they run

__all__ = ["BUILT_ON_DEVICE", "FORMAT", "PRECISIONS", "lower_programs"]


def _max_batch(p) -> int:
    """The largest batch a split program was exported for (its batch symbol's upper bound; 1 when static)."""
    name = p.program.graph_signature.user_inputs[0]
    dim = next(n for n in p.program.graph.nodes if n.op == "placeholder" and n.name == name).meta["val"].shape[0]
    if isinstance(dim, int):
        return dim
    bound = p.program.range_constraints.get(dim.node.expr)
    if bound is None or not math.isfinite(float(bound.upper)):
        raise ExportError(f"{p.name}: no bound on the batch dimension", got=str(dim), expected="Dim('batch', max=N)")
    return int(bound.upper)


def lower_programs(programs, root: Path, *, precision: str = "fp32", compute_capabilities: Sequence[str] | None = None,
                   opt_batch: dict[str, int] | None = None, trt=None, flavour: str | None = None, **_) -> dict[str, SegmentRef]:
    """onnx/<name>.onnx (checked against torch) and engine/<name>.engine for every program, with engines.json; where
    TensorRT can build here (a GPU, or TensorRT-RTX in CPU-only mode for `compute_capabilities`)."""
    from edgeexit.export.lower_onnx import lower_onnx

    root = Path(root)
    if trt is None:
        trt, flavour = tensorrt(flavour)
    flavour = flavour or flavour_of(trt)
    built: dict[str, tuple[str, BuiltEngine]] = {}
    for p in programs:
        onnx_path = lower_onnx(p, root / "onnx" / f"{p.name}.onnx")
        hi = _max_batch(p)
        opt = min(hi, max(1, (opt_batch or {}).get(p.name, hi)))
        built[p.name] = (onnx_path.relative_to(root).as_posix(),
                         build_engine(onnx_path, batch=(1, opt, hi), precision=precision,
                                      compute_capabilities=compute_capabilities, trt=trt, flavour=flavour))
    caps = next(iter(built.values()))[1].compute_capabilities
    return write_engines(root, built, builder_record(trt, flavour, precision, caps, tool="python builder"))
