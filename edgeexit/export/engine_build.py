"""One TensorRT engine from one ONNX file, with an optimisation profile over a batch range (min 1, opt the typical
live batch of that segment, max), through TensorRT's Python builder or JetPack's trtexec; and the engine files with
their record (engine/*.engine, engine/engines.json) written into a bundle directory.

Works with NVIDIA TensorRT (`tensorrt`, 10.x on JetPack 6, or 11) and TensorRT-RTX (`tensorrt_rtx`), which builds in
CPU-only mode for the compute capabilities it is told (desktop GPUs only). Precision comes from the model: an fp16
engine is the fp32 ONNX with the builder's FP16 flag where the version has one (TensorRT 10), else the same ONNX
with fp16 weights (`half_onnx`; TensorRT 11 and RTX dropped the flag). An int8 engine comes from ONNX with explicit
Q/DQ nodes, zero points 0, written by export from the PT2E-quantized programs (`quantize_programs(scheme="tensorrt")`,
calibrated on the recipe's calibration set): one path for every version, a strongly typed network where the version
has no INT8 flag (TensorRT 11, RTX), the INT8 flag where it has one (TensorRT 10).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from edgeexit.bundle import SegmentRef
from edgeexit.errors import ConfigError, ExportError
from edgeexit.export.fp16_onnx import half_onnx
from edgeexit.export.trt_parse import network, parse
from edgeexit.runtime.engine_record import DIR, METADATA, Builder, EngineEntry, EngineRecord
from edgeexit.runtime.trt_device import cuda_device_count, current_device, flavour_of, require_cuda_device, tensorrt

PRECISIONS = ("fp16", "int8", "fp32")  # int8: from the Q/DQ nodes of the bundle's int8 ONNX
# compute capabilities TensorRT-RTX 1.7 builds for (no Jetson SM72/SM87, no SM90: PLATFORM.md)
RTX_CAPABILITIES = {"7.5": "SM75", "8.0": "SM80", "8.6": "SM86", "8.9": "SM89", "12.0": "SM120", "12.1": "SM121"}


@dataclass
class BuiltEngine:
    """A serialised engine and how it was built."""

    data: bytes
    input: str
    profile: dict[str, list[int]]  # min / opt / max input shapes
    fp16: str | None  # "builder flag" | "fp16 weights" | None (fp32)
    compute_capabilities: list[str]


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ExportError(f"the engine lowering cannot produce {precision}", got=precision, expected=" | ".join(PRECISIONS))


def check_capabilities(flavour: str, capabilities: Sequence[str] | None) -> None:
    """Refuse compute capabilities this flavour cannot build for here (before any build starts)."""
    if flavour != "tensorrt_rtx":
        if capabilities:
            raise ConfigError("NVIDIA TensorRT builds for the GPU it runs on", got=f"compute capabilities {list(capabilities)}",
                              expected="none (the current device)", hint="build on the device itself, or use TensorRT-RTX")
        require_cuda_device("building a TensorRT engine")  # only RTX has a CPU-only build mode
    elif not capabilities:  # on a device: its own; without one there is nothing to build for
        if cuda_device_count() == 0:
            raise ConfigError("a CPU-only TensorRT-RTX build needs the compute capabilities to build for",
                              got="none given and no CUDA device here", expected=" | ".join(RTX_CAPABILITIES),
                              hint="pass --compute-capability 8.6 (compute_capabilities=['8.6'])")
    else:
        bad = [c for c in capabilities if c not in RTX_CAPABILITIES]
        if bad:
            raise ConfigError("TensorRT-RTX cannot build for these compute capabilities", got=bad,
                              expected=" | ".join(RTX_CAPABILITIES), hint="Jetson (7.2, 8.7) needs NVIDIA TensorRT from JetPack")


def set_capabilities(trt, flavour: str, capabilities: Sequence[str] | None, cfg) -> list[str]:
    """Set the target compute capabilities on an RTX builder config; the list recorded in the metadata."""
    check_capabilities(flavour, capabilities)
    if flavour != "tensorrt_rtx":
        return [current_device().compute_capability]
    if not capabilities:
        cfg.num_compute_capabilities = 1
        cfg.set_compute_capability(trt.ComputeCapability.CURRENT, 0)
        return [current_device().compute_capability]
    cfg.num_compute_capabilities = len(capabilities)
    for i, c in enumerate(capabilities):
        cfg.set_compute_capability(getattr(trt.ComputeCapability, RTX_CAPABILITIES[c]), i)
    return list(capabilities)


def build_engine(onnx_path: Path, *, batch: tuple[int, int, int], precision: str = "fp16",
                 compute_capabilities: Sequence[str] | None = None, workspace_mb: int | None = None,
                 trt=None, flavour: str | None = None) -> BuiltEngine:
    """One engine from one ONNX file, its (only) input's batch dimension profiled over `batch` = (min, opt, max).
    NVIDIA TensorRT builds on (and for) the current GPU; TensorRT-RTX builds in CPU-only mode for
    `compute_capabilities` ("8.6", ...), or for the current GPU when none are given."""
    check_precision(precision)
    lo, opt, hi = batch
    if not 1 <= lo <= opt <= hi:
        raise ConfigError("bad batch range for an optimisation profile", got=batch, expected="1 <= min <= opt <= max")
    if trt is None:
        trt, flavour = tensorrt(flavour)
    flavour = flavour or flavour_of(trt)
    check_capabilities(flavour, compute_capabilities)
    onnx_path = Path(onnx_path)
    flag = getattr(trt.BuilderFlag, "FP16", None)
    fp16 = None if precision in ("fp32", "int8") else ("builder flag" if flag is not None else "fp16 weights")
    int8_flag = getattr(trt.BuilderFlag, "INT8", None) if precision == "int8" else None
    with tempfile.TemporaryDirectory() as tmp:
        source = half_onnx(onnx_path, Path(tmp) / onnx_path.name) if fp16 == "fp16 weights" else onnx_path
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        # types from the model itself, except where the FP16 flag (a weakly typed network) chooses them
        net = network(trt, builder, strongly_typed=fp16 != "builder flag" and int8_flag is None)
        parser, errors = parse(trt, logger, net, source.read_bytes(), source)  # keep it: it owns the weights
    if errors:
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}", got="; ".join(errors[:3]),
                          expected="every node supported", hint="parse_onnx() lists the unsupported nodes")
    if net.num_inputs != 1:
        raise ExportError(f"{onnx_path.name} has {net.num_inputs} inputs", got=net.num_inputs, expected=1)
    inp = net.get_input(0)
    sample = [int(d) for d in tuple(inp.shape)[1:]]
    if any(d < 1 for d in sample) or tuple(inp.shape)[0] != -1:
        raise ExportError(f"{onnx_path.name}: only the batch dimension may be dynamic", got=list(inp.shape),
                          expected="[-1, C, H, W]", hint="export with a dynamic batch (edgeexit does)")
    cfg = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    shapes = {"min": [lo, *sample], "opt": [opt, *sample], "max": [hi, *sample]}
    profile.set_shape(inp.name, shapes["min"], shapes["opt"], shapes["max"])
    cfg.add_optimization_profile(profile)
    if fp16 == "builder flag":
        cfg.set_flag(flag)
    if int8_flag is not None:  # TensorRT 10: explicit Q/DQ still wants the flag; the scales come from the graph
        cfg.set_flag(int8_flag)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        cfg.clear_flag(trt.BuilderFlag.TF32)  # fp32 means fp32, not TensorFloat-32 convolutions
    if workspace_mb:
        cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    caps = set_capabilities(trt, flavour, compute_capabilities, cfg)
    serialized = builder.build_serialized_network(net, cfg)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path.name}", got="build_serialized_network: None",
                          expected="an engine", hint="the builder log above names the layer; some ops have no "
                          "implementation (TensorRT-RTX: NonZero)")
    data = bytes(serialized)
    del serialized, parser, net
    return BuiltEngine(data, inp.name, shapes, fp16, caps)


def build_with_trtexec(trtexec: str, onnx_path: Path, engine_path: Path, *, batch: tuple[int, int, int],
                       precision: str, workspace_mb: int | None = None) -> BuiltEngine:
    """The same engine through JetPack's trtexec (/usr/src/tensorrt/bin/trtexec) instead of the Python builder."""
    import onnx

    require_cuda_device("trtexec")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    inp = graph.input[0]
    sample = [d.dim_value for d in inp.type.tensor_type.shape.dim][1:]
    shapes = {k: [n, *sample] for k, n in zip(("min", "opt", "max"), batch)}
    spec = {k: f"{inp.name}:{'x'.join(map(str, v))}" for k, v in shapes.items()}
    cmd = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}", f"--minShapes={spec['min']}",
           f"--optShapes={spec['opt']}", f"--maxShapes={spec['max']}", "--skipInference"]
    if precision == "fp16":
        cmd.append("--fp16")
    if precision == "int8":
        cmd.append("--int8")  # explicit Q/DQ: the scales come from the graph, no calibration cache
    if workspace_mb:
        cmd.append(f"--memPoolSize=workspace:{int(workspace_mb)}M")
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as err:
        raise ConfigError("cannot run trtexec", got=f"{trtexec}: {err.strerror}", expected="an executable trtexec",
                          hint="JetPack installs it as /usr/src/tensorrt/bin/trtexec") from None
    if res.returncode != 0 or not Path(engine_path).is_file():
        raise ExportError(f"trtexec could not build {Path(onnx_path).name}", got=res.stdout[-600:] + res.stderr[-600:],
                          expected="exit code 0", hint="run the command by hand: " + " ".join(cmd))
    return BuiltEngine(Path(engine_path).read_bytes(), inp.name, shapes, "builder flag" if precision == "fp16" else None,
                       [current_device().compute_capability])


def write_engines(root: Path, built: dict[str, tuple[str, BuiltEngine]], builder: Builder) -> dict[str, SegmentRef]:
    """engine/<name>.engine for every built engine, and engine/engines.json (the builder record, per engine its
    source ONNX, bundle-relative, and profile)."""
    root = Path(root)
    (root / DIR).mkdir(parents=True, exist_ok=True)
    refs, engines = {}, {}
    for name, (onnx_rel, e) in built.items():
        rel = f"{DIR}/{name}.engine"
        (root / rel).write_bytes(e.data)
        refs[name] = SegmentRef(file=rel)
        engines[name] = EngineEntry(file=rel, onnx=onnx_rel, input=e.input, profile=e.profile, fp16=e.fp16)
    record = EngineRecord(builder=builder, engines=engines)
    (root / METADATA).write_text(json.dumps(record.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    return refs
