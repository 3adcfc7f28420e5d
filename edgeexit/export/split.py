"""Split: one `torch.export` program per exit segment (segment + head + exit score) and one for the unsplit model,
each with a dynamic batch over the target's range. Every lowering (ONNX, .pt2, .pte, TensorRT) starts from these.

Segment I/O is named: segment k takes `x` and returns `features`, `logits`, `score` (the last: `logits`, `score`);
the reference model takes `x` and returns `logits`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.export import Dim, ExportedProgram

from edgeexit.bundle import BATCH, TensorSpec
from edgeexit.errors import ExportError
from edgeexit.models.net import EarlyExitNet, ScoreFn

INPUT = "x"
SEGMENT_OUTPUTS = ("features", "logits", "score")
FINAL_OUTPUTS = ("logits", "score")
REFERENCE_OUTPUTS = ("logits",)


@dataclass
class Program:
    """One exported graph: its name (`seg0`..., `reference`), program, named I/O and a float32 example input."""

    name: str
    program: ExportedProgram
    module: nn.Module  # the eager module it was exported from (the lowering check's yardstick)
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    example: torch.Tensor


class _Tuple(nn.Module):
    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x):
        return (self.m(x),)


def _spec(name: str, t: torch.Tensor) -> TensorSpec:
    return TensorSpec(name=name, shape=[BATCH, *t.shape[1:]], dtype=str(t.dtype).removeprefix("torch."))


def export_program(name: str, module: nn.Module, example: torch.Tensor, output_names: tuple[str, ...],
                   max_batch: int) -> Program:
    """`module` exported with a batch dimension from 1 to `max_batch` (static 1 when max_batch is 1)."""
    module = module.eval()
    dynamic = ({0: Dim("batch", min=1, max=max_batch)},) if max_batch > 1 else None
    # mkldnn / nnpack off: with them on, ExecuTorch's XNNPACK lowering of a dynamic batch breaks above ~16
    with warnings.catch_warnings(), torch.no_grad(), torch.backends.mkldnn.flags(enabled=False), \
            torch.backends.nnpack.flags(enabled=False):
        warnings.simplefilter("ignore")
        try:
            program = torch.export.export(module, (example,), dynamic_shapes=dynamic, strict=False)
        except Exception as err:  # torch.export raises many kinds for a graph it cannot capture
            raise ExportError(f"torch.export could not capture {name}", got=f"{type(err).__name__}: {str(err)[:300]}",
                              expected="a graph with a dynamic batch", hint="the model may branch on the batch size") from err
        outs = module(example)
    if len(outs) != len(output_names):
        raise ExportError(f"{name} returns {len(outs)} outputs", got=len(outs), expected=list(output_names))
    return Program(name, program, module, [_spec(INPUT, example)],
                   [_spec(n, o) for n, o in zip(output_names, outs)], example)


def split_programs(net: EarlyExitNet, score_fn: ScoreFn, input_shape: tuple[int, int, int], *, max_batch: int,
                   unsplit: nn.Module | None = None, seed: int = 0) -> tuple[list[Program], Program]:
    """Programs of every exit segment, and of the unsplit model (`unsplit`, default `net.unsplit()`)."""
    net.eval()
    batch = 2 if max_batch > 1 else 1
    x = torch.randn((batch, *input_shape), generator=torch.Generator().manual_seed(seed))
    reference = export_program("reference", _Tuple(unsplit if unsplit is not None else net.unsplit()), x,
                               REFERENCE_OUTPUTS, max_batch)
    programs = []
    for k in range(net.num_exits):
        seg = net.exit_segment(k, score_fn).eval()
        p = export_program(f"seg{k}", seg, x, FINAL_OUTPUTS if seg.final else SEGMENT_OUTPUTS, max_batch)
        programs.append(p)
        with torch.no_grad():
            x = seg(x)[0]
    return programs, reference


def chain_outputs(programs: list[Program], x: torch.Tensor) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """(input, outputs by name) of every program's eager module as the chain runs them: each segment takes the
    previous one's features, the reference (if listed) takes `x` itself."""
    out, cur = [], x
    with torch.no_grad():
        for p in programs:
            feed = x if p.name == "reference" else cur
            outs = dict(zip((o.name for o in p.outputs), p.module(feed)))
            out.append((feed, outs))
            if p.name != "reference" and "features" in outs:
                cur = outs["features"]
    return out
