"""Split: one `torch.export` program per exit segment (segment + head + exit score) and one for the unsplit model,
each with a dynamic batch over the target's range. Every lowering (ONNX, .pt2, .pte, TensorRT) starts from these.

Segment I/O is named: segment k takes `x` and returns `features`, `logits`, `score` (the last: `logits`, `score`);
the reference model takes `x` and returns `logits`.

Probes are programs the profiler times alone, never run by the exit loop: `head{k}` (segment k's features ->
`logits`, `score`: what an intermediate exit adds) and `static{k}` (`x` -> `logits`: the network truncated at exit
k, the static alternative an early-exit model must beat).
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
    feed: str = "chain"  # what it takes in the chain: "chain" (the previous segment's features), "x", or "seg{k}"


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
                   unsplit: nn.Module | None = None, seed: int = 0,
                   temperatures: list[float] | None = None) -> tuple[list[Program], Program]:
    """Programs of every exit segment, and of the unsplit model (`unsplit`, default `net.unsplit()`). Segment k's
    score reads logits / temperatures[k] (temperature scaling; default 1, unscaled)."""
    net.eval()
    batch = 2 if max_batch > 1 else 1
    x = torch.randn((batch, *input_shape), generator=torch.Generator().manual_seed(seed))
    reference = export_program("reference", _Tuple(unsplit if unsplit is not None else net.unsplit()), x,
                               REFERENCE_OUTPUTS, max_batch)
    reference.feed = "x"
    programs = []
    for k in range(net.num_exits):
        seg = net.exit_segment(k, score_fn, temperature=temperatures[k] if temperatures else 1.0).eval()
        p = export_program(f"seg{k}", seg, x, FINAL_OUTPUTS if seg.final else SEGMENT_OUTPUTS, max_batch)
        programs.append(p)
        with torch.no_grad():
            x = seg(x)[0]
    return programs, reference


class _Head(nn.Module):
    """features -> (logits, score): an intermediate exit's head alone."""

    def __init__(self, segment: nn.Module):
        super().__init__()
        self.segment = segment

    def forward(self, features):
        return self.segment(features, head_only=True)


class _Truncated(nn.Module):
    """x -> (logits,): the network up to exit k and that exit's head, nothing else."""

    def __init__(self, segments: list[nn.Module]):
        super().__init__()
        self.segments = nn.ModuleList(segments)

    def forward(self, x):
        for s in self.segments[:-1]:
            x = s.body(x)
        return (self.segments[-1](x)[1],)


def probe_programs(net: EarlyExitNet, score_fn: ScoreFn, input_shape: tuple[int, int, int], *, max_batch: int,
                   temperatures=None, seed: int = 0) -> list[Program]:
    """`head{k}` and `static{k}` for every intermediate exit k (the final exit's are the reference's own); the heads
    score as the segments do (with each exit's temperature)."""
    net.eval()
    x = torch.randn((2 if max_batch > 1 else 1, *input_shape), generator=torch.Generator().manual_seed(seed))
    temps = list(temperatures) if temperatures is not None else [1.0] * net.num_exits
    segments = [net.exit_segment(k, score_fn, temperature=temps[k]).eval() for k in range(net.num_exits)]
    heads, statics, feats = [], [], x
    for k, seg in enumerate(segments[:-1]):
        with torch.no_grad():
            feats = seg.body(feats)
        h = export_program(f"head{k}", _Head(seg), feats, FINAL_OUTPUTS, max_batch)
        h.feed = f"seg{k}"
        s = export_program(f"static{k}", _Truncated(segments[:k + 1]), x, REFERENCE_OUTPUTS, max_batch)
        s.feed = "x"
        heads.append(h)
        statics.append(s)
    return heads + statics


def chain_outputs(programs: list[Program], x: torch.Tensor) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """(input, outputs by name) of every program's eager module as the chain runs them: each segment takes the
    previous one's features, the reference and static probes take `x` itself, head{k} segment k's features."""
    out, cur, features = [], x, {}
    with torch.no_grad():
        for p in programs:
            feed = x if p.feed == "x" else cur if p.feed == "chain" else features[p.feed]
            outs = dict(zip((o.name for o in p.outputs), p.module(feed)))
            out.append((feed, outs))
            if p.feed == "chain" and "features" in outs:
                features[p.name] = cur = outs["features"]
    return out
