"""Int8 post-training quantisation of split programs (PT2E with ExecuTorch's XNNPACK quantizer), calibrated as the
chain runs when deployed: segment 0 observes the calibration images, segment k+1 observes the features that the
*quantized* segment k emits for them; the reference observes the raw images.

Weights are int8 per output channel and activations int8 per tensor (symmetric), which is what XNNPACK's int8 kernels
take. Two parts stay float: the exit score (softmax / max / top-k: the quantizer has no pattern for them) and every
linear layer whose output is a graph output, i.e. the classifier that makes the logits. Those layers are a few
thousand MACs; an int8 output would round the logits to 1/255 of their range, which moves scores near thresholds.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.export import Dim, ExportedProgram
from torch.fx import GraphModule, Node

from edgeexit.errors import ExportError, RuntimeMissingError, ShapeError
from edgeexit.export.split import Program

REFERENCE = "reference"
# ops that only move or view data: a linear layer followed only by these up to the graph output makes an output
_VIEWS = {torch.ops.aten.view.default, torch.ops.aten.reshape.default, torch.ops.aten.flatten.using_ints,
          torch.ops.aten.squeeze.dim, torch.ops.aten.squeeze.dims, torch.ops.aten.clone.default,
          torch.ops.aten.contiguous.default}


def _pt2e():
    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer, get_symmetric_quantization_config)
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as err:
        raise RuntimeMissingError("int8 quantisation needs ExecuTorch and torchao", got=f"{type(err).__name__}: {err}",
                                  expected="executorch==1.5.1, torchao==0.18.0",
                                  hint="pip install -e '.[executorch]'") from err
    return XNNPACKQuantizer, get_symmetric_quantization_config, prepare_pt2e, convert_pt2e


def _makes_output(node: Node) -> bool:
    """Whether `node`'s value reaches the graph output through view-like ops only."""
    for user in node.users:
        if user.op == "output" or (user.target in _VIEWS and _makes_output(user)):
            return True
    return False


def _quantize_node(node: Node) -> bool:
    """The quantizer's filter: everything it has a pattern for, except the linear layers that produce outputs."""
    return not (node.target == torch.ops.aten.linear.default and _makes_output(node))


def batch_range(program: ExportedProgram) -> tuple[int, int]:
    """(min, max) of the program's batch dimension; (1, 1) for a static batch of 1."""
    x = next(n for n in program.graph.nodes
             if n.op == "placeholder" and n.name == program.graph_signature.user_inputs[0])
    b = x.meta["val"].shape[0]
    if isinstance(b, int):
        return b, b
    r = program.range_constraints[b.node.expr]
    return int(r.lower), int(r.upper)


def _calibrate(module: nn.Module, data: torch.Tensor, batch: int) -> None:
    with torch.no_grad():
        for i in range(0, len(data), batch):
            module(data[i:i + batch])


def _run(module: nn.Module, data: torch.Tensor, batch: int) -> torch.Tensor:
    """The first output (`features` of a segment) on all of `data`."""
    with torch.no_grad():
        return torch.cat([module(data[i:i + batch])[0] for i in range(0, len(data), batch)])


def _check(p: Program, data: torch.Tensor) -> None:
    want = tuple(p.example.shape[1:])
    if not isinstance(data, torch.Tensor) or data.dtype != torch.float32 or tuple(data.shape[1:]) != want \
            or len(data) == 0:
        got = f"{type(data).__name__} {getattr(data, 'dtype', '')} {tuple(getattr(data, 'shape', ()))}"
        raise ShapeError(f"calibration data for {p.name} has the wrong shape or dtype", got=got,
                         expected=f"a float32 tensor [N >= 1, {', '.join(map(str, want))}]",
                         hint="pass the images the segments will see, normalised as for the model")
    if not torch.isfinite(data).all():
        raise ShapeError(f"calibration data for {p.name} holds NaN or inf", got="non-finite values",
                         expected="finite float32 values", hint="check the normalisation of the images")


def quantize_program(p: Program, data: torch.Tensor, *, batch: int = 64) -> Program:
    """`p` with int8 weights and activations, observed on `data`: a re-exported program over the same batch range,
    and the converted module (q/dq ops around float reference kernels) as its `module`."""
    XNNPACKQuantizer, config, prepare_pt2e, convert_pt2e = _pt2e()
    _check(p, data)
    lo, hi = batch_range(p.program)
    step = max(1, min(batch, hi))  # the exported module guards its batch range
    quantizer = XNNPACKQuantizer().set_global(config(is_per_channel=True)).set_filter_function(_quantize_node)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            prepared = prepare_pt2e(p.program.module(), quantizer)
            _calibrate(prepared, data, step)
            converted: GraphModule = convert_pt2e(prepared)
        except Exception as err:  # the quantizer raises many kinds for a graph it cannot annotate
            raise ExportError(f"PT2E could not quantize {p.name}", got=f"{type(err).__name__}: {str(err)[:300]}",
                              expected="a graph of convolutions, linear layers and pointwise ops",
                              hint="export --precision fp32 works for every backbone") from err
        dynamic = ({0: Dim("batch", min=lo, max=hi)},) if hi > lo else None
        example = p.example[:max(1, min(len(p.example), hi))]
        try:
            program = torch.export.export(converted, (example,), dynamic_shapes=dynamic, strict=False)
        except Exception as err:  # torch.export raises many kinds for a graph it cannot capture
            raise ExportError(f"torch.export could not capture the quantized {p.name}",
                              got=f"{type(err).__name__}: {str(err)[:300]}",
                              expected=f"a graph with a batch from {lo} to {hi}",
                              hint="report the backbone; export --precision fp32 works") from err
    return Program(p.name, program, converted, list(p.inputs), list(p.outputs), p.example)


def quantize_programs(programs: list[Program], calibration: torch.Tensor, *, batch: int = 64) -> list[Program]:
    """Every program quantized to int8, in order. Segments are calibrated as a chain (segment k+1 on the features of
    the quantized segment k, computed from `calibration`); a program named `reference` on `calibration` itself."""
    if not programs:
        raise ExportError("nothing to quantize", got="no programs", expected="the programs of split_programs")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ExportError("calibration batch must be a positive integer", got=batch, expected=">= 1")
    out, features = [], calibration
    for p in programs:
        if p.name == REFERENCE:
            out.append(quantize_program(p, calibration, batch=batch))
            continue
        q = quantize_program(p, features, batch=batch)
        out.append(q)
        if len(q.outputs) > 2:  # an intermediate segment: its features feed the next one
            features = _run(q.module, features, max(1, min(batch, batch_range(q.program)[1])))
    return out
