"""Int8 post-training quantisation of split programs (PT2E with ExecuTorch's XNNPACK quantizer), calibrated as the
chain runs when deployed: segment 0 observes the calibration images, segment k+1 observes the features that the
*quantized* segment k emits for them; the reference observes the raw images.

Weights are int8 per output channel (symmetric) and activations int8 per tensor, which XNNPACK's int8 kernels take;
per channel measured closer to float than per tensor once batch norm is folded into the convolutions. The scheme
follows the runtime: `xnnpack` observes activations with a zero point (affine, XNNPACK's own config), `tensorrt`
symmetrically (zero point 0), as TensorRT's explicit quantization requires of the Q/DQ nodes in the ONNX it builds
int8 engines from. What stays
float (`float_tail`): the last linear layer of each head (the logits) and everything computed from it (the exit
score: softmax, max, top-k, products). These are a few thousand MACs; int8 logits are rounded to 1/255 of their range,
which doubled the logit error and moves scores near the exit thresholds.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn
from torch.export import Dim, ExportedProgram
from torch.fx import Graph, GraphModule, Node

from edgeexit.errors import ExportError, RuntimeMissingError, ShapeError
from edgeexit.export.split import SEGMENT_OUTPUTS, Program

_HEAVY = {torch.ops.aten.conv2d.default, torch.ops.aten.conv1d.default, torch.ops.aten.convolution.default,
          torch.ops.aten.linear.default}


def _pt2e():
    try:
        from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
            XNNPACKQuantizer,
            get_symmetric_quantization_config,
        )
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as err:
        raise RuntimeMissingError("int8 quantisation needs ExecuTorch and torchao", got=f"{type(err).__name__}: {err}",
                                  expected="executorch==1.5.1, torchao==0.18.0",
                                  hint="pip install -e '.[executorch]'") from err
    return XNNPACKQuantizer, get_symmetric_quantization_config, prepare_pt2e, convert_pt2e


def float_tail(graph: Graph) -> set[Node]:
    """The nodes that stay float: every linear layer after which no convolution or linear layer runs (the last layer
    of each head: logits, confidence) and everything computed from them (the exit score)."""
    feeds_heavy: set[Node] = set()
    for n in reversed(graph.nodes):
        if any(u.target in _HEAVY or u in feeds_heavy for u in n.users):
            feeds_heavy.add(n)
    tail: set[Node] = set()
    for n in graph.nodes:  # topological order: a node's inputs are decided before it
        if (n.target == torch.ops.aten.linear.default and n not in feeds_heavy) or \
                any(a in tail for a in n.all_input_nodes):
            tail.add(n)
    return tail


def _outside_float_tail():
    """The quantizer's node filter. It is called after prepare_pt2e has rewritten the graph, so the tail is
    computed from the graph the node belongs to, once per graph."""
    tails: dict[int, set[Node]] = {}

    def keep(node: Node) -> bool:
        tail = tails.get(id(node.graph))
        if tail is None:
            tail = tails[id(node.graph)] = float_tail(node.graph)
        return node not in tail
    return keep


def batch_range(program: ExportedProgram) -> tuple[int, int]:
    """(min, max) of the program's batch dimension; (1, 1) for a static batch of 1."""
    x = next(n for n in program.graph.nodes
             if n.op == "placeholder" and n.name == program.graph_signature.user_inputs[0])
    b = x.meta["val"].shape[0]
    if isinstance(b, int):
        return b, b
    r = program.range_constraints[b.node.expr]
    return int(r.lower), int(r.upper)


def output_steps(p: Program) -> list[float | None]:
    """The quantisation step of each output of a quantized program, None where an output is float. XNNPACK's int8
    kernels round differently from the q/dq reference: an int8 output of the .pte may be a step or two off."""
    out = next(n for n in p.module.graph.nodes if n.op == "output").args[0]
    return [float(n.args[1]) if n.target == torch.ops.quantized_decomposed.dequantize_per_tensor.default else None
            for n in out]


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


SCHEMES = ("xnnpack", "tensorrt")


def quantization_config(scheme: str):
    """PT2E config of a scheme: XNNPACK's symmetric per-channel config, with symmetric activations for TensorRT."""
    if scheme not in SCHEMES:
        raise ExportError("unknown quantization scheme", got=scheme, expected=" | ".join(SCHEMES))
    _, config, _, _ = _pt2e()
    cfg = config(is_per_channel=True)
    if scheme == "tensorrt":
        import dataclasses

        from torchao.quantization.pt2e import HistogramObserver
        from torchao.quantization.pt2e.quantizer import QuantizationSpec

        act = cfg.input_activation
        sym = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_symmetric,
                               is_dynamic=False, observer_or_fake_quant_ctr=HistogramObserver.with_args(
                                   **act.observer_or_fake_quant_ctr.p.keywords))
        cfg = dataclasses.replace(cfg, input_activation=sym, output_activation=sym)
    return cfg


def quantize_program(p: Program, data: torch.Tensor, *, batch: int = 64, scheme: str = "xnnpack") -> Program:
    """`p` with int8 weights and activations, observed on `data`: a re-exported program over the same batch range,
    and the converted module (q/dq ops around float reference kernels) as its `module`."""
    XNNPACKQuantizer, _, prepare_pt2e, convert_pt2e = _pt2e()
    _check(p, data)
    lo, hi = batch_range(p.program)
    quantizer = XNNPACKQuantizer().set_global(quantization_config(scheme)).set_filter_function(_outside_float_tail())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # without the batch-range guard: calibration batches may be larger than the deployed batch
            prepared = prepare_pt2e(p.program.module(check_guards=False), quantizer)
            _calibrate(prepared, data, batch)
            converted: GraphModule = convert_pt2e(prepared)
        except Exception as err:  # the quantizer raises many kinds for a graph it cannot annotate
            raise ExportError(f"PT2E could not quantize {p.name}", got=f"{type(err).__name__}: {str(err)[:300]}",
                              expected="a graph of convolutions, linear layers and pointwise ops",
                              hint="the float programs lower for every backbone") from err
        dynamic = ({0: Dim("batch", min=lo, max=hi)},) if hi > lo else None
        example = p.example[:max(1, min(len(p.example), hi))]
        try:
            program = torch.export.export(converted, (example,), dynamic_shapes=dynamic, strict=False)
        except Exception as err:  # torch.export raises many kinds for a graph it cannot capture
            raise ExportError(f"torch.export could not capture the quantized {p.name}",
                              got=f"{type(err).__name__}: {str(err)[:300]}",
                              expected=f"a graph with a batch from {lo} to {hi}",
                              hint="report the backbone; the float programs lower") from err
    return Program(p.name, program, converted, list(p.inputs), list(p.outputs), p.example, p.feed)


def quantize_programs(programs: list[Program], calibration: torch.Tensor, *, batch: int = 64,
                      scheme: str = "xnnpack") -> list[Program]:
    """Every program quantized to int8, in order. Segments are calibrated as a chain (segment k+1 on the features of
    the quantized segment k, computed from `calibration`); the reference and static probes on `calibration` itself,
head{k} on quantized segment k's features."""
    if not programs:
        raise ExportError("nothing to quantize", got="no programs", expected="the programs of split_programs")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ExportError("calibration batch must be a positive integer", got=batch, expected=">= 1")
    out, cur, features = [], calibration, {}
    for p in programs:
        feed = calibration if p.feed == "x" else cur if p.feed == "chain" else features[p.feed]
        q = quantize_program(p, feed, batch=batch, scheme=scheme)
        out.append(q)
        if p.feed == "chain" and [o.name for o in q.outputs] == list(SEGMENT_OUTPUTS):  # its features feed the next
            features[p.name] = cur = _run(q.module, cur, batch)
    return out
