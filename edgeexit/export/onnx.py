"""Export each exit segment (segment + head + exit score) to ONNX with a dynamic batch, checked against torch."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.export import Dim

from edgeexit.errors import ExportError
from edgeexit.models.net import EarlyExitNet, ScoreFn

MAX_BATCH = 1024
INPUT_NAME = "x"
SEGMENT_OUTPUTS = ("features", "logits", "score")
FINAL_OUTPUTS = ("logits", "score")


def _export(module: nn.Module, example: torch.Tensor, path: Path, output_names: list[str]) -> None:
    module.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (example,), str(path), dynamo=True, external_data=False, verbose=False,
            input_names=[INPUT_NAME], output_names=output_names,
            dynamic_shapes=({0: Dim("batch", min=1, max=MAX_BATCH)},),
        )


def check_against_torch(module: nn.Module, path: Path, example: torch.Tensor, *, atol: float = 1e-4, seed: int = 0) -> float:
    """Run the ONNX file with onnxruntime on random inputs of a few batch sizes; raise if it strays from torch."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for batch in (1, 3):
        x = torch.randn((batch, *example.shape[1:]), generator=gen) * example.std().clamp_min(1e-3) + example.mean()
        with torch.no_grad():
            want = [t.numpy() for t in module(x)]
        got = sess.run(None, {INPUT_NAME: x.numpy()})
        for name, w, g in zip(sess.get_outputs(), want, got):
            if w.shape != g.shape:
                raise ExportError(f"ONNX output {name.name} of {path.name} has the wrong shape", got=g.shape, expected=w.shape,
                                  hint="the dynamic batch dimension was probably specialised during export")
            err = float(np.max(np.abs(w - g) / (1.0 + np.abs(w)))) if w.size else 0.0
            worst = max(worst, err)
    if worst > atol:
        raise ExportError(f"onnxruntime disagrees with torch on {path.name}", got=f"max error {worst:.2e}",
                          expected=f"<= {atol:.0e}", hint="an op may be exported with different semantics; try another opset")
    return worst


def export_segments(net: EarlyExitNet, score_fn: ScoreFn, input_shape: tuple[int, int, int], out_dir: Path,
                    *, check: bool = True) -> list[Path]:
    """segments/seg{k}.onnx for every exit: x -> (features, logits, score), the last x -> (logits, score)."""
    net.eval()
    x = torch.randn(2, *input_shape)
    paths = []
    for k in range(net.num_exits):
        seg = net.exit_segment(k, score_fn).eval()
        path = Path(out_dir) / f"seg{k}.onnx"
        _export(seg, x, path, list(FINAL_OUTPUTS if seg.final else SEGMENT_OUTPUTS))
        if check:
            check_against_torch(seg, path, x)
        paths.append(path)
        with torch.no_grad():
            x = seg(x)[0]
    return paths


def segment_output_shapes(net: EarlyExitNet, score_fn: ScoreFn, input_shape: tuple[int, int, int]) -> list[list[list[int]]]:
    """Per exit, the shapes (without batch) of its segment's outputs: what the runtime preallocates."""
    x = torch.zeros(2, *input_shape)
    shapes = []
    with torch.no_grad():
        for k in range(net.num_exits):
            outs = net.exit_segment(k, score_fn).eval()(x)
            shapes.append([list(o.shape[1:]) for o in outs])
            x = outs[0]
    return shapes


def export_unsplit(net: EarlyExitNet, input_shape: tuple[int, int, int], path: Path, *, check: bool = True) -> Path:
    """The original single-exit model as one graph x -> logits: the reference for every measured saving."""
    model = net.unsplit().eval()
    x = torch.randn(2, *input_shape)
    _export(_Tuple(model), x, Path(path), ["logits"])
    if check:
        check_against_torch(_Tuple(model), Path(path), x)
    return Path(path)


class _Tuple(nn.Module):
    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x):
        return (self.m(x),)
