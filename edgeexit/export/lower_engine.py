"""Lowering to TensorRT engines: one engine per ONNX segment and one for the reference model, each with an
optimisation profile over the target's batch range (min 1, opt the typical live batch of that segment, max).

Works with NVIDIA TensorRT (`tensorrt`, 10.x on JetPack 6, or 11) and TensorRT-RTX (`tensorrt_rtx`), which builds in
CPU-only mode for the compute capabilities it is told (desktop GPUs only). Precision comes from the model: an fp16
engine is the fp32 ONNX with the builder's FP16 flag where the version has one (TensorRT 10), else the same ONNX
with fp16 weights (`half_onnx`; TensorRT 11 and RTX dropped the flag). An int8 engine comes from ONNX with explicit
Q/DQ nodes, zero points 0, written by export from the PT2E-quantized programs (`quantize_programs(scheme="tensorrt")`,
calibrated on the recipe's calibration set): one path for every version, a strongly typed network where the version
has no INT8 flag (TensorRT 11, RTX), the INT8 flag where it has one (TensorRT 10).

Engines are device-specific, so `edgeexit export` never builds them (`BUILT_ON_DEVICE`): a TensorRT target's bundle
carries the ONNX segments and the build kit (`tensorrt/build_engines.py`, from `targets/jetson/`), which calls
`build_bundle_engines` on the device. That writes a new bundle version with the engines and `engine/engines.json`:
the TensorRT flavour and version, GPU name, compute capabilities and (on Jetson) the L4T release they were built
for. `check_engine` compares that record with the device before anything is deserialised, and refuses a mismatch.

Never create a TensorRT Runtime (or deserialise) without a CUDA device: it segfaults. `require_cuda_device` asks
cuda-python first and raises `RuntimeMissingError` instead.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edgeexit.bundle import SegmentRef
from edgeexit.errors import BundleError, ConfigError, ExportError, RuntimeMissingError

FORMAT = "engine"
PRECISIONS = ("fp16", "int8", "fp32")  # int8: from the Q/DQ nodes of the bundle's int8 ONNX
BUILT_ON_DEVICE = True  # export ships ONNX + the build kit; the engines are built where they run
DIR = "engine"
METADATA = f"{DIR}/engines.json"
KIT_DIR = "tensorrt"  # the build kit inside a bundle
KIT_FILES = ("build_engines.py", "README.md")
KIT_SOURCE = Path(__file__).resolve().parents[2] / "targets" / "jetson"
FLAVOURS = ("tensorrt", "tensorrt_rtx")
FLAVOUR_ENV = "EDGEEXIT_TENSORRT"  # force one flavour (tensorrt | tensorrt_rtx)
# compute capabilities TensorRT-RTX 1.7 builds for (no Jetson SM72/SM87, no SM90: PLATFORM.md)
RTX_CAPABILITIES = {"7.5": "SM75", "8.0": "SM80", "8.6": "SM86", "8.9": "SM89", "12.0": "SM120", "12.1": "SM121"}
REBUILD_HINT = "rebuild the engines on this device: python3 BUNDLE/tensorrt/build_engines.py (see its README.md)"
TEGRA_RELEASE = Path("/etc/nv_tegra_release")


class EngineMismatchError(BundleError):
    """An engine was built for another device, TensorRT version or L4T release than this one."""


# ------------------------------------------------------------------------------------------------ the toolchain

def tensorrt(flavour: str | None = None):
    """(module, flavour): NVIDIA TensorRT if importable, else TensorRT-RTX; `flavour` or $EDGEEXIT_TENSORRT picks one."""
    want = flavour or os.environ.get(FLAVOUR_ENV) or None
    if want is not None and want not in FLAVOURS:
        raise ConfigError("unknown TensorRT flavour", got=want, expected=" | ".join(FLAVOURS))
    tried = []
    for name in (want,) if want else FLAVOURS:
        try:
            return __import__(name), name
        except Exception as err:  # PyPI's `tensorrt` stub raises more than ImportError when its libraries are absent
            tried.append(f"{name}: {type(err).__name__}")
    raise RuntimeMissingError("TensorRT is not installed", got="; ".join(tried), expected=" or ".join(want and [want] or FLAVOURS),
                              hint="on a Jetson it comes with JetPack (python3-libnvinfer); on a desktop GPU "
                              "pip install -e '.[tensorrt]'; to check ONNX segments without a GPU pip install -e '.[trt-check]'")


def version_of(trt) -> str:
    return str(trt.__version__)


def _cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError as err:
        raise RuntimeMissingError("TensorRT on a GPU needs cuda-python", got="no cuda.bindings", expected="cuda-python",
                                  hint="pip install -e '.[tensorrt]' (or '.[jetson]' on a Jetson)") from err
    return cudart


def cuda_device_count() -> int:
    """CUDA devices visible to this process; 0 without cuda-python, a driver or a GPU (never raises for their absence)."""
    try:
        cudart = _cudart()
    except RuntimeMissingError:
        return 0
    err, count = cudart.cudaGetDeviceCount()
    return int(count) if err == cudart.cudaError_t.cudaSuccess and count else 0


def require_cuda_device(what: str = "TensorRT") -> int:
    """The device count, or RuntimeMissingError when there is none: call this before creating a TensorRT Runtime
    or deserialising an engine (both segfault without a device)."""
    cudart = _cudart()
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or not count:
        raise RuntimeMissingError(f"{what} needs a CUDA device", got=f"cudaGetDeviceCount: {getattr(err, 'name', err)}, "
                                  f"{count or 0} device(s)", expected="an NVIDIA GPU with its driver",
                                  hint="run on the Jetson or GPU machine; here, run the ONNX segments with "
                                  "--backend onnxruntime (CPU emulation)")
    return int(count)


def l4t_release(path: Path = TEGRA_RELEASE) -> str | None:
    """The Jetson Linux (L4T) release, e.g. "36.4.0", from /etc/nv_tegra_release; None off a Jetson."""
    try:
        first = Path(path).read_text().splitlines()[0]  # "# R36 (release), REVISION: 4.0, GCID: ..., BOARD: ..."
    except (OSError, IndexError):
        return None
    try:
        major = first.split("R", 1)[1].split()[0]
        revision = first.split("REVISION:", 1)[1].split(",")[0].strip()
    except IndexError:
        return None
    return f"{major}.{revision}"


@dataclass(frozen=True)
class Device:
    """What an engine is specific to: the GPU (name, compute capability "8.7") and, on Jetson, the L4T release."""

    gpu: str | None
    compute_capability: str | None
    l4t: str | None = None


def current_device(index: int = 0) -> Device:
    """The CUDA device `index` of this process (RuntimeMissingError without one)."""
    require_cuda_device()
    cudart = _cudart()
    err, prop = cudart.cudaGetDeviceProperties(index)
    if err != cudart.cudaError_t.cudaSuccess:
        raise RuntimeMissingError(f"cannot read the properties of CUDA device {index}", got=getattr(err, "name", err),
                                  hint="check CUDA_VISIBLE_DEVICES and the driver")
    name = prop.name.split(b"\0", 1)[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
    return Device(gpu=name, compute_capability=f"{prop.major}.{prop.minor}", l4t=l4t_release())


# ------------------------------------------------------------------------------------------------ parsing

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


def _network(trt, builder, strongly_typed: bool):
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def _parse(trt, logger, network, data: bytes, path: Path) -> tuple[object, list[str]]:
    parser = trt.OnnxParser(network, logger)
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
    network = _network(trt, builder, False)
    parser = trt.OnnxParser(network, logger)
    report = ParseReport(path, len(graph.node))
    # supports_model_v2 goes through the whole graph (parse stops at the first failure); its errors name the nodes
    # (its subgraph partition also marks supported neighbours of a failing node, so it is not used)
    if not parser.supports_model_v2(data, str(path)):
        failing = sorted({int(e.node()) for e in (parser.get_error(i) for i in range(parser.num_errors))
                          if 0 <= int(e.node()) < len(graph.node)})
        report.unsupported = [(n, graph.node[n].op_type, graph.node[n].name) for n in failing]
    network2 = _network(trt, builder, False)
    parser2, report.errors = _parse(trt, logger, network2, data, path)
    del parser2, network2, parser, network
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


# ------------------------------------------------------------------------------------------------ fp16 weights

def half_onnx(src: Path, dst: Path) -> Path:
    """The ONNX graph at `src` with fp16 weights and fp16 arithmetic, its inputs and outputs still float32 (a Cast at
    each end): how an fp16 engine is made where the builder has no FP16 flag (TensorRT 11, TensorRT-RTX)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16
    limit = float(np.finfo(np.float16).max)

    def half(t):
        return numpy_helper.from_array(np.clip(numpy_helper.to_array(t), -limit, limit).astype(np.float16), t.name)

    for i, t in enumerate(g.initializer):
        if t.data_type == F32:
            g.initializer[i].CopyFrom(half(t))
    for node in g.node:
        if node.op_type in ("If", "Loop", "Scan"):
            raise ExportError(f"{Path(src).name}: fp16 conversion does not enter subgraphs", got=node.op_type,
                              expected="a graph without control flow", hint="export --precision fp32")
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == F32:
                a.t.CopyFrom(half(a.t))
            elif node.op_type == "Cast" and a.name == "to" and a.i == F32:
                a.i = F16
            elif node.op_type == "CastLike":
                pass  # follows its second input, already fp16
    renames = {}
    front = []
    for inp in g.input:
        if inp.type.tensor_type.elem_type == F32:
            renames[inp.name] = f"{inp.name}__fp16"
            front.append(helper.make_node("Cast", [inp.name], [renames[inp.name]], to=F16, name=f"{inp.name}__to_fp16"))
    for node in g.node:
        node.input[:] = [renames.get(n, n) for n in node.input]
    back = []
    for out in g.output:
        if out.type.tensor_type.elem_type == F32:
            inner = f"{out.name}__fp16"
            for node in g.node:
                node.output[:] = [inner if n == out.name else n for n in node.output]
                node.input[:] = [inner if n == out.name else n for n in node.input]
            back.append(helper.make_node("Cast", [inner], [out.name], to=F32, name=f"{out.name}__to_fp32"))
    nodes = front + list(g.node) + back
    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]  # the float32 intermediate types no longer hold; TensorRT infers them
    dst = Path(dst)
    onnx.save(model, str(dst))
    return dst


# ------------------------------------------------------------------------------------------------ building

def _capabilities(trt, flavour: str, capabilities: Sequence[str] | None, cfg) -> list[str]:
    """Set the target compute capabilities on an RTX builder config; the list recorded in the metadata."""
    if flavour != "tensorrt_rtx":
        if capabilities:
            raise ConfigError("NVIDIA TensorRT builds for the GPU it runs on", got=f"compute capabilities {list(capabilities)}",
                              expected="none (the current device)", hint="build on the device itself, or use TensorRT-RTX")
        return [current_device().compute_capability]
    if not capabilities:  # on a device: its own; without one there is nothing to build for
        if cuda_device_count() == 0:
            raise ConfigError("a CPU-only TensorRT-RTX build needs the compute capabilities to build for",
                              got="none given and no CUDA device here", expected=" | ".join(RTX_CAPABILITIES),
                              hint="pass compute_capabilities=['8.6'] (--compute-capability 8.6)")
        cfg.num_compute_capabilities = 1
        cfg.set_compute_capability(trt.ComputeCapability.CURRENT, 0)
        return [current_device().compute_capability]
    bad = [c for c in capabilities if c not in RTX_CAPABILITIES]
    if bad:
        raise ConfigError("TensorRT-RTX cannot build for these compute capabilities", got=bad,
                          expected=" | ".join(RTX_CAPABILITIES), hint="Jetson (7.2, 8.7) needs NVIDIA TensorRT from JetPack")
    cfg.num_compute_capabilities = len(capabilities)
    for i, c in enumerate(capabilities):
        cfg.set_compute_capability(getattr(trt.ComputeCapability, RTX_CAPABILITIES[c]), i)
    return list(capabilities)


@dataclass
class BuiltEngine:
    """A serialised engine and how it was built."""

    data: bytes
    input: str
    profile: dict[str, list[int]]  # min / opt / max input shapes
    fp16: str | None  # "builder flag" | "fp16 weights" | None (fp32)
    compute_capabilities: list[str]


def build_engine(onnx_path: Path, *, batch: tuple[int, int, int], precision: str = "fp16",
                 compute_capabilities: Sequence[str] | None = None, workspace_mb: int | None = None,
                 trt=None, flavour: str | None = None) -> BuiltEngine:
    """One engine from one ONNX file, its (only) input's batch dimension profiled over `batch` = (min, opt, max).
    NVIDIA TensorRT builds on (and for) the current GPU; TensorRT-RTX builds in CPU-only mode for
    `compute_capabilities` ("8.6", ...), or for the current GPU when none are given."""
    if precision not in PRECISIONS:
        raise ExportError(f"the engine lowering cannot produce {precision}", got=precision, expected=" | ".join(PRECISIONS))
    lo, opt, hi = batch
    if not 1 <= lo <= opt <= hi:
        raise ConfigError("bad batch range for an optimisation profile", got=batch, expected="1 <= min <= opt <= max")
    if trt is None:
        trt, flavour = tensorrt(flavour)
    flavour = flavour or ("tensorrt_rtx" if trt.__name__.startswith("tensorrt_rtx") else "tensorrt")
    if flavour == "tensorrt":
        require_cuda_device("building a TensorRT engine")  # only RTX has a CPU-only build mode
    onnx_path = Path(onnx_path)
    flag = getattr(trt.BuilderFlag, "FP16", None)
    fp16 = None if precision in ("fp32", "int8") else ("builder flag" if flag is not None else "fp16 weights")
    int8_flag = getattr(trt.BuilderFlag, "INT8", None) if precision == "int8" else None
    with tempfile.TemporaryDirectory() as tmp:
        source = half_onnx(onnx_path, Path(tmp) / onnx_path.name) if fp16 == "fp16 weights" else onnx_path
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        # types from the model itself, except where the FP16 flag (a weakly typed network) chooses them
        network = _network(trt, builder, strongly_typed=fp16 != "builder flag" and int8_flag is None)
        parser, errors = _parse(trt, logger, network, source.read_bytes(), source)  # keep it: it owns the weights
    if errors:
        raise ExportError(f"TensorRT cannot parse {onnx_path.name}", got="; ".join(errors[:3]),
                          expected="every node supported", hint="parse_onnx() lists the unsupported nodes")
    if network.num_inputs != 1:
        raise ExportError(f"{onnx_path.name} has {network.num_inputs} inputs", got=network.num_inputs, expected=1)
    inp = network.get_input(0)
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
    caps = _capabilities(trt, flavour, compute_capabilities, cfg)
    serialized = builder.build_serialized_network(network, cfg)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path.name}", got="build_serialized_network: None",
                          expected="an engine", hint="the builder log above names the layer; some ops have no "
                          "implementation (TensorRT-RTX: NonZero)")
    data = bytes(serialized)
    del serialized, parser, network
    return BuiltEngine(data, inp.name, shapes, fp16, caps)


def builder_record(trt, flavour: str, precision: str, compute_capabilities: list[str]) -> dict:
    """What the engines of one build are specific to (engines.json's `builder`)."""
    device = current_device() if cuda_device_count() else Device(None, None, l4t_release())
    return {"flavour": flavour, "version": version_of(trt), "gpu": device.gpu,
            "compute_capabilities": compute_capabilities, "l4t": device.l4t, "precision": precision,
            "cpu_only": device.gpu is None}


def check_engine(builder: dict, device: Device, *, flavour: str, version: str) -> None:
    """Refuse an engine built by another TensorRT, for another GPU or another L4T release than `device` and the
    TensorRT that would load it (before any deserialisation: a foreign engine is undefined behaviour)."""
    problems = []
    if builder.get("flavour") != flavour or builder.get("version") != version:
        problems.append(f"built with {builder.get('flavour')} {builder.get('version')}, this is {flavour} {version}")
    caps = builder.get("compute_capabilities") or []
    if device.compute_capability not in caps:
        problems.append(f"built for compute capability {', '.join(caps) or '?'}, this GPU is {device.compute_capability}")
    if flavour == "tensorrt" and builder.get("gpu") and builder.get("gpu") != device.gpu:
        problems.append(f"built on {builder.get('gpu')}, this GPU is {device.gpu}")  # TensorRT engines are per GPU model
    if builder.get("l4t") != device.l4t and (builder.get("l4t") or device.l4t):
        problems.append(f"built on L4T {builder.get('l4t') or 'none'}, this is L4T {device.l4t or 'none'}")
    if problems:
        raise EngineMismatchError("the TensorRT engines were built for another device or version", got="; ".join(problems),
                                  expected=f"{flavour} {version} on {device.gpu} (compute capability "
                                  f"{device.compute_capability}{', L4T ' + device.l4t if device.l4t else ''})",
                                  hint=REBUILD_HINT)


def read_metadata(engine_path: Path) -> dict:
    """engines.json beside an engine file (part of the verified bundle)."""
    meta = Path(engine_path).parent / Path(METADATA).name
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError) as err:
        data, problem = None, str(err)
    else:
        problem = None if isinstance(data, dict) and {"builder", "engines"} <= set(data) else "no builder / engines"
    if problem:
        raise BundleError(f"no readable {Path(METADATA).name} beside {Path(engine_path).name}", got=problem,
                          expected=METADATA, hint=REBUILD_HINT)
    return data


# ------------------------------------------------------------------------------------------------ lowering

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
    flavour = flavour or ("tensorrt_rtx" if trt.__name__.startswith("tensorrt_rtx") else "tensorrt")
    built: dict[str, tuple[Path, BuiltEngine]] = {}
    for p in programs:
        onnx_path = lower_onnx(p, root / "onnx" / f"{p.name}.onnx")
        hi = _max_batch(p)
        opt = min(hi, max(1, (opt_batch or {}).get(p.name, hi)))
        built[p.name] = (onnx_path, build_engine(onnx_path, batch=(1, opt, hi), precision=precision,
                                                 compute_capabilities=compute_capabilities, trt=trt, flavour=flavour))
    return write_engines(root, built, builder_record(trt, flavour, precision, next(iter(built.values()))[1].compute_capabilities))


def write_engines(root: Path, built: dict[str, tuple[Path, BuiltEngine]], builder: dict) -> dict[str, SegmentRef]:
    """engine/<name>.engine for every built engine, and engine/engines.json (the builder record, per engine its
    source ONNX and profile)."""
    root = Path(root)
    (root / DIR).mkdir(parents=True, exist_ok=True)
    refs, engines = {}, {}
    for name, (onnx_path, e) in built.items():
        path = root / DIR / f"{name}.engine"
        path.write_bytes(e.data)
        rel = path.relative_to(root).as_posix()
        refs[name] = SegmentRef(file=rel)
        engines[name] = {"file": rel, "onnx": Path(onnx_path).resolve().relative_to(root.resolve()).as_posix()
                         if Path(onnx_path).resolve().is_relative_to(root.resolve()) else Path(onnx_path).name,
                         "input": e.input, "profile": e.profile, "fp16": e.fp16}
    (root / METADATA).write_text(json.dumps({"builder": builder, "engines": engines}, indent=2, sort_keys=True) + "\n")
    return refs


# ------------------------------------------------------------------------------------------------ on the device

def write_device_kit(root: Path) -> list[str]:
    """Copy the on-device build kit (targets/jetson/build_engines.py + README.md) into a bundle being written."""
    missing = [f for f in KIT_FILES if not (KIT_SOURCE / f).is_file()]
    if missing:
        raise ExportError("the TensorRT build kit is missing from this edgeexit", got=f"{KIT_SOURCE}: no {missing}",
                          expected=f"targets/jetson/{', '.join(KIT_FILES)}",
                          hint="install edgeexit from its repository (pip install -e .)")
    (Path(root) / KIT_DIR).mkdir(parents=True, exist_ok=True)
    out = []
    for f in KIT_FILES:
        shutil.copyfile(KIT_SOURCE / f, Path(root) / KIT_DIR / f)
        out.append(f"{KIT_DIR}/{f}")
    return out


def _onnx_slots(fields: dict) -> list[dict]:
    """Every {"segment": {format: ref}} of a manifest (exits, their head / static probes, the reference) with ONNX."""
    slots = []
    for e in fields["exits"]:
        slots += [s for s in (e, e.get("head"), e.get("static")) if isinstance(s, dict) and "onnx" in s.get("segment", {})]
    if "onnx" in fields["reference"]["segment"]:
        slots.append(fields["reference"])
    return slots


def opt_batches(bundle) -> dict[str, int]:
    """The typical live batch of every segment at the target's largest batch: the calibration's share of samples that
    reach it (a head sees its segment's batch; the reference and the static truncations see every sample)."""
    hi = bundle.manifest.batch.max
    reach = [1.0] * len(bundle.exits)
    cal = bundle.root / "calibration.json"
    if cal.is_file():
        fractions = json.loads(cal.read_text()).get("exit_fractions") or []
        if len(fractions) == len(bundle.exits):
            reach = [max(0.0, 1.0 - float(sum(fractions[:k]))) for k in range(len(bundle.exits))]
    out = {}
    for k, r in enumerate(reach):
        out[f"seg{k}"] = out[f"head{k}"] = min(hi, max(1, round(hi * r)))
        out[f"static{k}"] = hi
    out["reference"] = hi
    return out


def build_bundle_engines(bundle_dir: Path, dest: Path | None = None, *, compute_capabilities: Sequence[str] | None = None,
                         workspace_mb: int | None = None, flavour: str | None = None, trtexec: str | None = None,
                         log: Callable[[str], None] = print):
    """Build the engines of a bundle from its ONNX files (segments, probes, reference) on the device, or with
    TensorRT-RTX in CPU-only mode for `compute_capabilities`, and write them as a new version of the bundle at `dest`
    (default: `bundle_dir`) through edgeexit's bundle writer: format `engine`, delegate `tensorrt`, engine/*.engine
    and engine/engines.json, every other file kept. `trtexec`: build with JetPack's trtexec at that path instead of
    the Python builder."""
    from edgeexit.bundle import load_bundle, write_bundle
    from edgeexit.bundle.manifest import SCHEMA_FILE
    from edgeexit.bundle.store import link_files

    b = load_bundle(Path(bundle_dir))
    m = b.manifest
    if "onnx" not in m.formats:
        raise BundleError("the bundle holds no ONNX segments to build engines from", got=m.formats, expected="onnx",
                          hint="export with --target jetson or --target cuda")
    if m.precision not in PRECISIONS:
        raise ExportError(f"the engine lowering cannot produce {m.precision}", got=m.precision, expected=" | ".join(PRECISIONS))
    trt, flavour = tensorrt(flavour)
    fields = m.model_dump(mode="json", exclude={"schema_version", "files", "checksum"})
    sources = {Path(s["segment"]["onnx"]["file"]).stem: s["segment"]["onnx"]["file"] for s in _onnx_slots(fields)}
    opt = opt_batches(b)
    built: dict[str, tuple[Path, BuiltEngine]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, rel in sources.items():
            batch = (1, min(m.batch.max, opt.get(name, m.batch.max)), m.batch.max)
            log(f"{name}: {rel} -> {DIR}/{name}.engine, batch {batch[0]}/{batch[1]}/{batch[2]}, {m.precision}")
            if trtexec:
                e = build_with_trtexec(trtexec, b.path(rel), Path(tmp) / f"{name}.engine", batch=batch,
                                       precision=m.precision, workspace_mb=workspace_mb)
            else:
                e = build_engine(b.path(rel), batch=batch, precision=m.precision, compute_capabilities=compute_capabilities,
                                 workspace_mb=workspace_mb, trt=trt, flavour=flavour)
            built[name] = (b.path(rel), e)
    record = builder_record(trt, flavour, m.precision, next(iter(built.values()))[1].compute_capabilities)
    record["tool"] = "trtexec" if trtexec else "python builder"

    def populate(out: Path) -> dict:
        link_files(b.root, [r for r in m.files if r != SCHEMA_FILE and not r.startswith(f"{DIR}/")], out)
        refs = write_engines(out, {n: (out / sources[n], e) for n, (_, e) in built.items()}, record)
        for slot in _onnx_slots(fields):
            slot["segment"][FORMAT] = refs[Path(slot["segment"]["onnx"]["file"]).stem].model_dump()
        return {"exits": fields["exits"], "reference": fields["reference"], "format": FORMAT,
                "formats": [FORMAT, *[f for f in m.formats if f != FORMAT]], "delegate": "tensorrt",
                "versions": {**m.versions, flavour: version_of(trt)}}

    return write_bundle(Path(dest) if dest is not None else Path(bundle_dir), fields, populate)


def build_with_trtexec(trtexec: str, onnx_path: Path, engine_path: Path, *, batch: tuple[int, int, int],
                       precision: str, workspace_mb: int | None = None) -> BuiltEngine:
    """The same engine through JetPack's trtexec (/usr/src/tensorrt/bin/trtexec) instead of the Python builder."""
    import subprocess

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
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0 or not Path(engine_path).is_file():
        raise ExportError(f"trtexec could not build {Path(onnx_path).name}", got=res.stdout[-600:] + res.stderr[-600:],
                          expected="exit code 0", hint="run the command by hand: " + " ".join(cmd))
    return BuiltEngine(Path(engine_path).read_bytes(), inp.name, shapes, "builder flag" if precision == "fp16" else None,
                       [current_device().compute_capability])
