"""TensorRT without a GPU (tensorrt-rtx: its ONNX parser and its CPU-only build mode), the refusals that keep a
machine without a GPU from segfaulting, the jetson bundle (data only, nothing executable) and `edgeexit engines`,
which verifies a bundle before building its engines into a new version of it; and, marked `gpu`, the torch-CUDA
and TensorRT backends against onnxruntime on the CPU."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import copy_run
from typer.testing import CliRunner

from edgeexit.bundle import load_bundle, sha256
from edgeexit.bundle.manifest import digest
from edgeexit.cli import app
from edgeexit.engines import build_engines
from edgeexit.errors import ConfigError, RuntimeMissingError
from edgeexit.export import lower_engine, split_programs
from edgeexit.export.engine_build import build_engine, set_capabilities
from edgeexit.export.fp16_onnx import half_onnx
from edgeexit.export.lower_onnx import lower_onnx
from edgeexit.export.trt_parse import parse_onnx
from edgeexit.models import ModelConfig, build_model, list_backbones
from edgeexit.models.scores import score_fn_torch
from edgeexit.rundir import LOCK
from edgeexit.runtime import EarlyExitRuntime, make_backend
from edgeexit.runtime.engine_record import METADATA, EngineMismatchError, check_engine
from edgeexit.runtime.trt_device import Device, cuda_device_count, l4t_release, tensorrt
from tests.conftest import QUICK

REPO = Path(__file__).resolve().parents[1]
MAX_BATCH = 8
SIZE = {"vgg16": 32, "densenet121": 32, "densenet169": 32}  # five 2x poolings; the others work at 16 px
CC = "8.6"  # what CPU-only builds target here (any of engine_build.RTX_CAPABILITIES)
HAS_GPU = torch.cuda.is_available()


@pytest.fixture(scope="module")
def rtx():
    return tensorrt("tensorrt_rtx")


@pytest.fixture(scope="module", autouse=True)
def torchlib_registry_once():
    """torch.onnx rebuilds its torchlib registry on every export (~0.9 s, a third of a small segment's export);
    build it once for this module's ~60 exports. The registry is only read when no custom translation table is
    given, as lower_onnx gives none. (Private API: without it the exports are just slower.)"""
    try:
        from torch.onnx._internal.exporter import _registration
    except ImportError:
        yield
        return
    original = _registration.ONNXRegistry.__dict__["from_torchlib"]
    cache: dict = {}

    def once(cls, *args, **kwargs):
        key = (args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = original.__func__(cls, *args, **kwargs)
        return cache[key]

    _registration.ONNXRegistry.from_torchlib = classmethod(once)
    yield
    _registration.ONNXRegistry.from_torchlib = original


def programs_of(name: str, size: int | None = None):
    size = size or SIZE.get(name, 16)
    torch.manual_seed(0)
    net = build_model(ModelConfig(backbone=name, image_size=size, in_channels=1, num_classes=4)).eval()
    programs, reference = split_programs(net, score_fn_torch("max_softmax"), (1, size, size), max_batch=MAX_BATCH)
    return [*programs, reference]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """name -> [(program, its .onnx)] of an untrained backbone, exported once for the whole module."""
    done: dict[str, list] = {}

    def get(name: str):
        if name not in done:
            root = tmp_path_factory.mktemp(f"onnx_{name}")
            # onnxruntime's agreement with torch on every backbone is test_backbones' job
            done[name] = [(p, lower_onnx(p, root / f"{p.name}.onnx", check=False)) for p in programs_of(name)]
        return done[name]

    return get


@pytest.mark.parametrize("name", list_backbones())
def test_every_segment_parses_and_builds_an_engine_without_a_gpu(name, exported, rtx):
    """Every segment and the reference of every backbone: zero unsupported nodes, an engine in CPU-only mode with a
    profile over the batch range."""
    trt, flavour = rtx
    for p, path in exported(name):
        report = parse_onnx(path, trt=trt)
        assert report.nodes > 0 and report.ok, (name, p.name, report.unsupported[:5], report.errors[:3])
        e = build_engine(path, batch=(1, 4, MAX_BATCH), precision="fp32", compute_capabilities=[CC], trt=trt,
                         flavour=flavour)
        sample = list(p.inputs[0].sample_shape)
        assert e.profile == {"min": [1, *sample], "opt": [4, *sample], "max": [MAX_BATCH, *sample]}
        assert e.compute_capabilities == [CC] and e.fp16 is None and len(e.data) > 1024


def test_unsupported_nodes_are_reported(tmp_path, rtx):
    """The parser check can fail: an op TensorRT has no importer for is listed by index and type."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]),
                               helper.make_node("NoSuchOp", ["r"], ["y"], domain="example.custom")], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.custom", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    report = parse_onnx(path, trt=rtx[0])
    assert not report.ok and report.errors
    assert any(op == "NoSuchOp" for _, op, _ in report.unsupported), report.unsupported


def test_fp16_engines_from_fp16_weights(tmp_path, exported, rtx):
    """TensorRT-RTX has no FP16 flag: an fp16 engine is built from the ONNX with fp16 weights, float32 at its edges,
    which computes what the fp32 graph does within fp16 rounding (checked on onnxruntime)."""
    import onnxruntime as ort

    from edgeexit.runtime.ort import session_options

    trt, flavour = rtx
    assert not hasattr(trt.BuilderFlag, "FP16")
    for p, path in exported("mobilenet_v3_small"):  # hardswish, hardsigmoid, squeeze-excitation
        half = half_onnx(path, tmp_path / f"{p.name}.fp16.onnx")
        g = onnx.load(str(half)).graph
        assert [i.type.tensor_type.elem_type for i in [*g.input, *g.output]] == [onnx.TensorProto.FLOAT] * (1 + len(g.output))
        assert all(t.data_type != onnx.TensorProto.FLOAT for t in g.initializer)
        x = np.random.default_rng(0).standard_normal((3, *p.inputs[0].sample_shape)).astype(np.float32)
        # every session in this process on edgeexit's one global thread pool (onnxruntime refuses a mix)
        want = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        got = ort.InferenceSession(str(half), session_options(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        for w, h in zip(want, got):
            np.testing.assert_allclose(h, w, atol=2e-2 * (1 + np.abs(w).max()), rtol=0)
        e = build_engine(path, batch=(1, 2, MAX_BATCH), precision="fp16", compute_capabilities=[CC], trt=trt, flavour=flavour)
        assert e.fp16 == "fp16 weights" and len(e.data) > 1024


def test_lower_programs_writes_engines_and_their_record(tmp_path, rtx):
    """The engine lowering from split programs: checked ONNX, one engine each, engines.json with the builder record
    and each engine's profile (opt from `opt_batch`, max from the program's batch range)."""
    trt, flavour = rtx
    programs = programs_of("tiny_cnn")
    refs = lower_engine.lower_programs(programs, tmp_path, precision="fp32", compute_capabilities=[CC],
                                       opt_batch={"seg1": 3}, trt=trt, flavour=flavour)
    assert sorted(refs) == sorted(p.name for p in programs)
    meta = json.loads((tmp_path / METADATA).read_text())
    assert meta["builder"] == {"flavour": "tensorrt_rtx", "version": trt.__version__, "gpu": None,
                               "compute_capabilities": [CC], "l4t": None, "precision": "fp32", "cpu_only": True,
                               "tool": "python builder"}
    for p in programs:
        assert (tmp_path / refs[p.name].file).stat().st_size > 1024 and (tmp_path / "onnx" / f"{p.name}.onnx").is_file()
        assert meta["engines"][p.name]["onnx"] == f"onnx/{p.name}.onnx"
        prof = meta["engines"][p.name]["profile"]
        assert prof["max"][0] == MAX_BATCH and prof["opt"][0] == (3 if p.name == "seg1" else MAX_BATCH)


@pytest.mark.parametrize("change, problem", [
    ({"version": "0.0.1"}, "built with tensorrt_rtx 0.0.1"),
    ({"flavour": "tensorrt"}, "built with tensorrt"),
    ({"compute_capabilities": ["8.9"]}, "built for compute capability 8.9, this GPU is 8.6"),
    ({"l4t": "36.4.0"}, "built on L4T 36.4.0, this is L4T none"),
])
def test_an_engine_from_another_device_or_version_is_refused(change, problem):
    built_for = {"flavour": "tensorrt_rtx", "version": "1.7.1.116", "gpu": None, "compute_capabilities": ["8.6"],
                 "l4t": None}
    here = Device(gpu="NVIDIA RTX A6000", compute_capability="8.6")
    check_engine(built_for, here, flavour="tensorrt_rtx", version="1.7.1.116")  # the same: accepted
    with pytest.raises(EngineMismatchError, match="another device or version") as err:
        check_engine({**built_for, **change}, here, flavour="tensorrt_rtx", version="1.7.1.116")
    assert problem in str(err.value) and "edgeexit engines RUN/bundle" in err.value.hint


def test_a_tensorrt_engine_is_specific_to_its_gpu_model():
    built_for = {"flavour": "tensorrt", "version": "10.3.0.30", "gpu": "Orin", "compute_capabilities": ["8.7"],
                 "l4t": "36.4.0"}
    check_engine(built_for, Device("Orin", "8.7", "36.4.0"), flavour="tensorrt", version="10.3.0.30")
    with pytest.raises(EngineMismatchError, match="built on Orin, this GPU is Xavier"):
        check_engine(built_for, Device("Xavier", "8.7", "36.4.0"), flavour="tensorrt", version="10.3.0.30")


def test_l4t_release_is_read_from_nv_tegra_release(tmp_path):
    f = tmp_path / "nv_tegra_release"
    f.write_text("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, DATE: Fri Sep 13\n")
    assert l4t_release(f) == "36.4.0"
    assert l4t_release(tmp_path / "absent") is None


@pytest.mark.skipif(HAS_GPU, reason="checks the refusal on a machine without a CUDA device")
def test_no_gpu_is_refused_before_tensorrt_is_touched():
    assert cuda_device_count() == 0
    with pytest.raises(RuntimeMissingError, match="the tensorrt backend needs a CUDA device") as err:
        make_backend("tensorrt")
    assert "cudaGetDeviceCount" in str(err.value.got) and "--backend onnxruntime" in err.value.hint
    with pytest.raises(RuntimeMissingError, match="building a TensorRT engine needs a CUDA device"):
        build_engine(Path("unused.onnx"), batch=(1, 1, 1), trt=object(), flavour="tensorrt")
    with pytest.raises(ConfigError, match="needs the compute capabilities"):
        set_capabilities(None, "tensorrt_rtx", None, None)


def test_compaction_kernels_compile():
    """NVRTC (no GPU needed) compiles the backend's exit-test, gather and scatter kernels."""
    from edgeexit.runtime.tensorrt_rt import KERNEL_NAMES, compile_kernels

    ptx = compile_kernels("compute_75").decode()
    assert all(f".entry {k}(" in ptx for k in KERNEL_NAMES)


@pytest.fixture(scope="module")
def jetson_run(tmp_path_factory):
    """`edgeexit build --target jetson` on a tiny model: (run directory, what it printed)."""
    run = tmp_path_factory.mktemp("jetson_run")
    res = CliRunner().invoke(app, ["build", "--run-dir", str(run), "--epochs", "1", "--budget", "0.7", "--no-prune",
                                   "--target", "jetson", *QUICK])
    assert res.exit_code == 0, res.output
    return run, res.output


def test_jetson_bundle_carries_onnx_and_nothing_executable(jetson_run):
    run, output = jetson_run
    b = load_bundle(run / "bundle")
    m = b.manifest
    assert (m.target, m.format, m.delegate, m.precision) == ("jetson", "onnx", "tensorrt", "fp16")
    assert m.formats[0] == "onnx" and "engine" not in m.formats and "pt2" in m.formats
    assert all(b.path(e.segment["onnx"].file).is_file() for e in b.exits)
    assert_nothing_executable(b.root)
    assert not (REPO / "targets" / "jetson" / "build_engines.py").exists()
    flat = " ".join(output.split())
    assert "measuring on onnxruntime (CPU emulation)" in flat  # said, not silent
    assert f"on the jetson itself: edgeexit engines {run / 'bundle'}" in flat  # the one command to run there
    with pytest.raises(ConfigError, match="engines of this jetson bundle are not built yet") as err:
        EarlyExitRuntime.open(b)
    assert "edgeexit engines BUNDLE" in err.value.hint


def assert_nothing_executable(root: Path) -> None:
    """No script and no executable file anywhere in a bundle (every file is data)."""
    for p in Path(root).rglob("*"):
        assert not p.is_symlink(), p
        if p.is_file():
            assert p.suffix not in (".py", ".sh", ".so", ".exe", ".bat"), p
            assert not os.stat(p).st_mode & 0o111, (p, oct(os.stat(p).st_mode))


def test_int8_jetson_bundle_has_symmetric_qdq_that_tensorrt_builds(jetson_run, tmp_path, rtx):
    """--precision int8: the ONNX the engines are built from holds explicit Q/DQ with zero points 0 (TensorRT's
    explicit quantization), onnxruntime runs it for the thresholds, and `edgeexit engines` builds int8 engines
    (CPU-only here)."""
    import onnx
    from onnx import numpy_helper

    run, _ = jetson_run
    work = copy_run(jetson_run, tmp_path / "run", ("checkpoint.pt", "calibration.json"))
    # in its own process: this module's cached torchlib registry (above) does not know the quantized ops
    res = subprocess.run([str(Path(sys.executable).parent / "edgeexit"), "export", "--run-dir", str(work), "--target",
                          "jetson", "--precision", "int8"], capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    b = load_bundle(work / "bundle")
    assert (b.manifest.precision, b.manifest.formats[0]) == ("int8", "onnx")
    for e in b.exits:
        graph = onnx.load(str(b.path(e.segment["onnx"].file))).graph
        inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
        assert qdq and all(not np.any(inits[n.input[2]]) for n in qdq if len(n.input) > 2 and n.input[2] in inits)
        assert not parse_onnx(b.path(e.segment["onnx"].file), trt=rtx[0]).unsupported
    cal = json.loads(b.path("calibration.json").read_text())
    assert cal["provenance"]["recalibrated_for"] == "int8"  # thresholds again, on the int8 ONNX's own scores
    res = CliRunner().invoke(app, ["engines", str(work / "bundle"), "--flavour", "tensorrt_rtx", "--compute-capability",
                                   CC, "--no-profile"])
    assert res.exit_code == 0, res.output
    built = load_bundle(work / "bundle")
    assert built.manifest.format == "engine" and built.manifest.precision == "int8"
    assert json.loads(built.path(METADATA).read_text())["builder"]["precision"] == "int8"


MARKER_PAYLOAD = "import pathlib\npathlib.Path({marker!r}).write_text('payload ran')\n"


def tree(root: Path) -> dict[str, str]:
    """Every entry under `root` (links not followed): a file's sha256, a link's target, "dir"; the run directory's
    lock aside (each command writes its name there)."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.name == LOCK:
            continue
        rel = p.relative_to(root).as_posix()
        out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else sha256(p) if p.is_file() else "dir"
    return out


def resign(bundle: Path, add: dict[str, bytes] | None = None, **fields) -> None:
    """What a hostile sender can do: change files and manifest fields, then list every file's sha256 again and
    recompute the checksum, so that the bundle verifies."""
    root = bundle.resolve()
    for rel, data in (add or {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    raw = json.loads((root / "manifest.json").read_text())
    raw.update(fields)
    raw["files"] = {**raw["files"], **{rel: sha256(root / rel) for rel in [*(add or {}), *raw["files"]]}}
    raw["checksum"] = digest(raw)
    (root / "manifest.json").write_text(json.dumps(raw))


def external_data_onnx(path: Path) -> bytes:
    """`path` with its first initializer moved to an external file outside the bundle (what TensorRT and onnx
    would read on their own)."""
    model = onnx.load(str(path))
    t = model.graph.initializer[0]
    t.ClearField("raw_data")
    del t.float_data[:]
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value="../../../../../../etc/hostname")
    return model.SerializeToString()


def edgeexit_command(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The `edgeexit` console script, as a user runs it."""
    return subprocess.run([str(Path(sys.executable).parent / "edgeexit"), *args], capture_output=True, text=True,
                          timeout=600, check=False, env=env, cwd=cwd)


def damage_unlisted_script(bundle: Path, marker: Path) -> None:  # what the old build kit's folder allowed
    for name in ("argparse.py", "build_engines.py"):
        (bundle / "tensorrt").mkdir(exist_ok=True)
        (bundle / "tensorrt" / name).write_text(MARKER_PAYLOAD.format(marker=str(marker)))


def damage_unlisted_link(bundle: Path, marker: Path) -> None:
    (bundle / "onnx" / "extra.onnx").symlink_to("/etc/hostname")


def damage_modified_segment(bundle: Path, marker: Path) -> None:
    with open(bundle / "onnx" / "seg0.onnx", "ab") as f:
        f.write(b"\0")


def damage_edited_manifest(bundle: Path, marker: Path) -> None:
    raw = json.loads((bundle / "manifest.json").read_text())
    raw["exits"][0]["threshold"] = 0.0
    (bundle / "manifest.json").write_text(json.dumps(raw))


def damage_external_data(bundle: Path, marker: Path) -> None:
    resign(bundle, {"onnx/reference.onnx": external_data_onnx(bundle / "onnx" / "reference.onnx")})


def damage_not_tensorrt(bundle: Path, marker: Path) -> None:
    resign(bundle, delegate="CPUExecutionProvider")


@pytest.mark.parametrize("damage, message, got", [
    (damage_unlisted_script, "the bundle holds files its manifest does not list", "tensorrt/argparse.py"),
    (damage_unlisted_link, "the bundle holds files its manifest does not list", "onnx/extra.onnx"),
    (damage_modified_segment, "bundle file was modified: onnx/seg0.onnx", "sha256"),
    (damage_edited_manifest, "manifest.json was modified after the bundle was written", "checksum"),
    (damage_external_data, "onnx/reference.onnx reads weights from other files (ONNX external data)", "got: ['"),
    (damage_not_tensorrt, "the bundle's target jetson does not run on TensorRT", "delegate CPUExecutionProvider"),
])
def test_engines_refuses_a_bad_bundle_before_building_anything(jetson_run, tmp_path, damage, message, got):
    """`edgeexit engines` verifies first: an unlisted file (the old kit's folder could hold an argparse.py that its
    script imported), a link, a modified file, an edited manifest, ONNX reading weights from elsewhere, a bundle not
    for TensorRT: a clean error, exit code 2, no engine built, nothing run, nothing in the run directory changed."""
    work = tmp_path / "run"
    shutil.copytree(jetson_run[0], work, symlinks=True)
    marker = tmp_path / "marker"
    damage(work / "bundle", marker)
    before = tree(work)
    res = edgeexit_command("engines", str(work / "bundle"), "--flavour", "tensorrt_rtx", "--compute-capability", CC,
                           cwd=work / "bundle")  # run from inside the bundle: still nothing in it is imported
    flat = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2, flat
    assert f"error: {message}" in flat and f"got: " in flat and got in flat and "hint: " in flat, flat
    assert "Traceback" not in flat and "-> engine/" not in flat  # refused before the first build
    assert not marker.exists()
    assert tree(work) == before  # no new version, no temporary left, nothing changed


@pytest.mark.parametrize("args, message", [
    (["--compute-capability", "8.7"], "TensorRT-RTX cannot build for these compute capabilities"),
    (["--flavour", "nonesuch"], "unknown TensorRT flavour"),
    pytest.param(["--compute-capability", CC, "--trtexec", "/bin/false"], "trtexec needs a CUDA device",
                 marks=pytest.mark.skipif(HAS_GPU, reason="checks the refusal on a machine without a CUDA device")),
    (["--compute-capability", CC, "--out", "{run}/checkpoint.pt"], "refusing to write a bundle over a path that is not"),
])
def test_engines_refuses_what_it_cannot_do_before_building(jetson_run, tmp_path, args, message):
    """Options refused before the first engine is built (each takes minutes on a Jetson), nothing changed."""
    work = tmp_path / "run"
    shutil.copytree(jetson_run[0], work, symlinks=True)
    before = tree(work)
    res = edgeexit_command("engines", str(work / "bundle"), "--flavour", "tensorrt_rtx",
                           *[a.format(run=work) for a in args])
    flat = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 2 and f"error: {message}" in flat and "Traceback" not in flat, flat
    assert "-> engine/" not in flat and tree(work) == before


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory) -> Path:
    """edgeexit as a wheel installs it (built from a copy of the package sources, unpacked): no checkout beside it."""
    src = tmp_path_factory.mktemp("wheel_src")
    shutil.copytree(REPO / "edgeexit", src / "edgeexit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-q", "-w", str(out), str(src)], capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    site = tmp_path_factory.mktemp("site")
    with zipfile.ZipFile(next(out.glob("edgeexit-*.whl"))) as whl:
        whl.extractall(site)
    return site


def test_edgeexit_engines_builds_engines_into_a_new_verified_bundle_version(jetson_run, tmp_path, wheel_site):
    """`edgeexit engines RUN/bundle` as a user runs it on the device, from an installed wheel (no checkout), in
    TensorRT-RTX's CPU-only mode here. The bundle comes from the previous edgeexit, with its build script listed:
    the script is neither run nor carried into the new version."""
    work = tmp_path / "run"
    shutil.copytree(jetson_run[0], work, symlinks=True)
    marker = tmp_path / "marker"
    resign(work / "bundle", {"tensorrt/build_engines.py": MARKER_PAYLOAD.format(marker=str(marker)).encode()})
    before = load_bundle(work / "bundle")
    env = {**os.environ, "PYTHONPATH": str(wheel_site)}
    probe = subprocess.run([sys.executable, "-c", "import edgeexit; print(edgeexit.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path, check=True)
    assert Path(probe.stdout.strip()).is_relative_to(wheel_site)  # the wheel's edgeexit, not this checkout's
    res = edgeexit_command("engines", str(work / "bundle"), "--flavour", "tensorrt_rtx", "--compute-capability", CC,
                           env=env, cwd=tmp_path)
    flat = " ".join((res.stdout + res.stderr).split())
    assert res.returncode == 0, flat
    assert "seg0: onnx/seg0.onnx -> engine/seg0.engine" in flat and "CPU-only build" in flat
    assert "cannot be profiled on this machine" in flat
    assert not marker.exists()
    b = load_bundle(work / "bundle")
    m = b.manifest
    assert (m.format, m.delegate) == ("engine", "tensorrt") and m.formats == ["engine", "onnx", "pt2"]
    assert b.root != before.root and m.versions["tensorrt_rtx"] == tensorrt("tensorrt_rtx")[0].__version__
    assert before.root.is_dir() and load_bundle(before.root).manifest.checksum == before.manifest.checksum  # kept
    meta = json.loads(b.path(METADATA).read_text())
    assert meta["builder"]["compute_capabilities"] == [CC] and meta["builder"]["cpu_only"]
    assert meta["builder"]["tool"] == "python builder"
    cal = json.loads(b.path("calibration.json").read_text())
    reach = 1.0 - cal["exit_fractions"][0]
    assert meta["engines"]["seg1"]["profile"]["opt"][0] == min(m.batch.max, max(1, round(m.batch.max * reach)))
    for slot in [*(e.segment for e in m.exits), m.reference.segment]:
        assert b.path(slot["engine"].file).stat().st_size > 1024 and slot["engine"].file in m.files
    for e in m.exits:  # the profiler's probes get engines too
        for probe in (e.head, e.static):
            if probe is not None:
                assert "engine" in probe.segment and b.path(probe.segment["engine"].file).is_file()
    kept = set(before.manifest.files) - {"manifest.schema.json", "tensorrt/build_engines.py"}
    assert kept <= set(m.files) and not any(f.startswith("tensorrt/") for f in m.files)  # nothing else lost
    assert_nothing_executable(b.root)
    if not HAS_GPU:
        with pytest.raises(RuntimeMissingError, match="needs a CUDA device"):
            EarlyExitRuntime.open(b)  # its default backend is now tensorrt, refused here before any deserialisation


def test_the_runtime_imports_nothing_from_export_and_the_engines_stage_no_torch():
    """The TensorRT runtime stands alone (it runs on the device), and the engines stage needs no torch."""
    code = ("import sys, edgeexit.runtime.tensorrt_rt, edgeexit.runtime.engine_record, edgeexit.runtime.trt_device; "
            "print(sorted(m for m in sys.modules if m.startswith('edgeexit.export') or m == 'torch')); "
            "import edgeexit.engines, edgeexit.export.engine_build, edgeexit.export.trt_parse; "
            "print('torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert res.stdout.split("\n")[:2] == ["[]", "False"], res.stdout
    for path in (REPO / "edgeexit" / "runtime").glob("*.py"):  # what a reviewer greps for
        assert "from edgeexit.export" not in path.read_text() and "import edgeexit.export" not in path.read_text(), path
    assert "from edgeexit.runtime" not in (REPO / "edgeexit" / "export" / "lower_onnx.py").read_text()


# ------------------------------------------------------------------------------------------------ on a GPU

def forced_final_within_fp16(bundle, backend: str) -> float:
    """max |forced-final logits on `backend` - the unsplit model on onnxruntime (CPU, fp32)|."""
    from edgeexit.compare import TOLERANCE

    x = np.random.default_rng(3).standard_normal((64, *bundle.input_shape)).astype(np.float32)
    rt = EarlyExitRuntime.open(bundle, backend)
    got = rt.forced(rt.num_exits - 1).run(x).logits
    want = EarlyExitRuntime.open(bundle, "onnxruntime").reference().run(x)
    err = float(np.max(np.abs(got - want)))
    assert err <= TOLERANCE["fp16"] * (1 + float(np.abs(want).max())), err
    return err


@pytest.mark.gpu
def test_torch_cuda_agrees_with_onnxruntime_on_the_cpu(jetson_run):
    from edgeexit.compare import compare_backends
    from edgeexit.pipeline import test_split

    b = load_bundle(jetson_run[0] / "bundle")
    res = compare_backends(b, ["onnxruntime", "torch-cuda"], images=test_split(b, "test", 1000)[0], min_agreement=0.999)
    assert res.agreement["torch-cuda"] >= 0.999 and res.passed, res.to_dict()
    forced_final_within_fp16(b, "torch-cuda")


@pytest.mark.gpu
def test_tensorrt_agrees_with_onnxruntime_on_the_cpu(jetson_run, tmp_path):
    from edgeexit.compare import compare_backends
    from edgeexit.pipeline import test_split

    try:
        tensorrt()
    except RuntimeMissingError as err:
        pytest.skip(f"a GPU but no TensorRT here: {err.what}")
    shutil.copytree(jetson_run[0] / "bundle", tmp_path / "bundle")
    b = build_engines(tmp_path / "bundle")
    res = compare_backends(b, ["onnxruntime", "tensorrt"], images=test_split(b, "test", 1000)[0], min_agreement=0.999)
    assert res.agreement["tensorrt"] >= 0.999, res.to_dict()
    forced_final_within_fp16(b, "tensorrt")
    assert not math.isnan(res.exits[-1]["max_abs_logits"]["tensorrt"])
