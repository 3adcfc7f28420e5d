"""What TensorRT's ONNX parser says about ONNX files: nodes it cannot run (index, op type, name) and parse errors.
Needs TensorRT (or TensorRT-RTX) but no GPU: the check CI runs on every segment of every backbone."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from edgeexit.errors import BundleError
from edgeexit.runtime.trt_device import tensorrt


@dataclass
class ParseReport:
    """What TensorRT's ONNX parser said about one file: nodes it cannot run (index, op, name) and parse errors."""

    path: Path
    nodes: int
    unsupported: list[tuple[int, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unsupported and not self.errors


def network(trt, builder, strongly_typed: bool):
    """An empty network definition, strongly typed where asked and where this TensorRT has the flag."""
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def parse(trt, logger, net, data: bytes, path: Path) -> tuple[object, list[str]]:
    """(parser, errors) of parsing `data` into `net`; keep the parser while the network is used: it owns the weights."""
    parser = trt.OnnxParser(net, logger)
    ok = parser.parse(data, str(path))
    errors = [f"{e.node_operator() or '?'} node {e.node_name() or e.node()}: {e.desc()}"
              for e in (parser.get_error(i) for i in range(parser.num_errors))]
    if not ok and not errors:
        errors = ["the parser failed without saying why"]
    return parser, errors


def parse_onnx(path: Path, *, trt=None) -> ParseReport:
    """Parse one ONNX file with TensorRT (no GPU needed); unsupported nodes by index, op type and name."""
    import onnx

    trt = trt or tensorrt()[0]
    path = Path(path)
    data = path.read_bytes()
    graph = onnx.load_from_string(data).graph
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    # the network must outlive its parser, and the parser (which owns the weights) the network's use
    net = network(trt, builder, False)
    parser = trt.OnnxParser(net, logger)
    report = ParseReport(path, len(graph.node))
    # supports_model_v2 goes through the whole graph (parse stops at the first failure); its errors name the nodes
    # (its subgraph partition also marks supported neighbours of a failing node, so it is not used)
    if not parser.supports_model_v2(data, str(path)):
        failing = sorted({int(e.node()) for e in (parser.get_error(i) for i in range(parser.num_errors))
                          if 0 <= int(e.node()) < len(graph.node)})
        report.unsupported = [(n, graph.node[n].op_type, graph.node[n].name) for n in failing]
    net2 = network(trt, builder, False)
    parser2, report.errors = parse(trt, logger, net2, data, path)
    del parser2, net2, parser, net
    return report


def parse_files(paths: Sequence[Path], *, trt=None) -> list[ParseReport]:
    """`parse_onnx` of every file (the segments and the reference of a bundle, say)."""
    trt = trt or tensorrt()[0]
    return [parse_onnx(p, trt=trt) for p in paths]


def parse_bundle(bundle) -> dict[str, ParseReport]:
    """Every ONNX segment and the reference of a (verified) bundle through TensorRT's parser, by program name."""
    files = {f"seg{e.index}": bundle.path(e.segment["onnx"].file) for e in bundle.exits if "onnx" in e.segment}
    if "onnx" in bundle.manifest.reference.segment:
        files["reference"] = bundle.path(bundle.manifest.reference.segment["onnx"].file)
    if not files:
        raise BundleError("the bundle holds no ONNX segments", got=bundle.manifest.formats, expected="onnx",
                          hint="export for a target with ONNX (cpu, jetson, cuda)")
    trt = tensorrt()[0]
    return {name: parse_onnx(p, trt=trt) for name, p in files.items()}
