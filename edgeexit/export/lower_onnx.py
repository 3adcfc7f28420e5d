"""Lowering to ONNX (onnxruntime, and the TensorRT parser): one .onnx per program, checked against torch."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from edgeexit.bundle import SegmentRef
from edgeexit.errors import ExportError
from edgeexit.export.split import Program

FORMAT = "onnx"
# What a target may ask of ONNX beside its own format. int8 ONNX (Q/DQ nodes from PT2E) is written only as the source
# a device builds int8 TensorRT engines from; onnxruntime runs it, but an XNNPACK int8 bundle does not carry it.
PRECISIONS = ("fp32",)
# max |onnx - torch| / (1 + |torch|); int8: onnxruntime's int8 kernels round differently from the q/dq reference
TOLERANCE = {"fp32": 1e-4, "int8": 0.1}


def lower_programs(programs: list[Program], root: Path, *, precision: str = "fp32", **_) -> dict[str, SegmentRef]:
    """onnx/<name>.onnx for every program, each checked against torch (int8: quantized programs with Q/DQ). For
    an fp16 TensorRT target the graphs stay fp32: the engine build makes them fp16."""
    tolerance = TOLERANCE["int8" if precision == "int8" else "fp32"]
    return {p.name: SegmentRef(file=lower_onnx(p, Path(root) / FORMAT / f"{p.name}.onnx", tolerance=tolerance)
                               .relative_to(root).as_posix()) for p in programs}


def lower_onnx(p: Program, path: Path, *, check: bool = True, tolerance: float = TOLERANCE["fp32"]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(p.program, (p.example,), str(path), dynamo=True, external_data=False, verbose=False,
                          input_names=[i.name for i in p.inputs], output_names=[o.name for o in p.outputs])
    if check:
        check_onnx(p, path, tolerance=tolerance)
    return path


def check_onnx(p: Program, path: Path, *, seed: int = 0, tolerance: float = TOLERANCE["fp32"]) -> float:
    """Run the file with onnxruntime (CPU) on random inputs at batch 1 and 3; raise if it strays from torch."""
    import onnxruntime as ort

    from edgeexit.ort_session import session_options

    sess = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    ex = p.example
    worst = 0.0
    for batch in (1, 3) if ex.shape[0] > 1 else (1,):
        x = torch.randn((batch, *ex.shape[1:]), generator=gen) * ex.std().clamp_min(1e-3) + ex.mean()
        with torch.no_grad():
            want = [t.numpy() for t in p.module(x)]
        got = sess.run(None, {p.inputs[0].name: x.numpy()})
        worst = max(worst, max_error(path, p, want, got))
    if worst > tolerance:
        raise ExportError(f"onnxruntime disagrees with torch on {path.name}", got=f"max error {worst:.2e}",
                          expected=f"<= {tolerance:.0e}", hint="an op may be exported with different semantics; try another opset")
    return worst


def max_error(path: Path, p: Program, want, got) -> float:
    """max |got - want| / (1 + |want|) over a program's outputs; a shape mismatch is an ExportError."""
    worst = 0.0
    for spec, w, g in zip(p.outputs, want, got):
        w, g = np.asarray(w), np.asarray(g)
        if w.shape != g.shape:
            raise ExportError(f"output {spec.name} of {path.name} has the wrong shape", got=g.shape, expected=w.shape,
                              hint="the dynamic batch dimension was probably specialised during export")
        if w.size:
            worst = max(worst, float(np.max(np.abs(w - g) / (1.0 + np.abs(w)))))
    return worst


def batch_one_form(root: Path, refs: dict[str, SegmentRef], segments: list[str], input_shape,
                   num_classes: int) -> dict | None:
    """The exit loop of one sample as one graph (edgeexit.export.fuse_onnx), for a target that runs ONNX: the
    manifest's `fused`, or None when there is nothing to fuse (one exit) or a segment cannot be fused."""
    from edgeexit.bundle.manifest import Fused
    from edgeexit.export.fuse_onnx import FUSED, fuse_segments

    paths = [Path(root) / refs[name].file for name in segments]
    path = fuse_segments(paths, Path(root) / FORMAT / f"{FUSED}.onnx", input_shape, num_classes)
    if path is None:
        return None
    inputs, outputs = Fused.io(input_shape, len(segments), num_classes)
    return Fused(segment={FORMAT: SegmentRef(file=path.relative_to(root).as_posix())}, inputs=inputs,
                 outputs=outputs).model_dump(mode="json")
