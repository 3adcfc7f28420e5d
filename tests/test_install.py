"""The runtime-only install (`pip install edgeexit`, no torch): what runs bundles imports none of the build side.

Each check runs in a child process whose import system refuses torch, torchvision, onnxscript, onnx, matplotlib,
torchao and executorch (a meta-path hook raising ModuleNotFoundError, as on a Jetson where only the core is
installed), on real onnxruntime with the tiny build's bundle. A command that needs the build side must say which
extra to install, without a traceback. The last tests hold pyproject.toml's ranges and tools/constraints.txt's pins
to the venv the tests run in.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
BUILD_SIDE = ("torch", "torchvision", "onnxscript", "onnx", "matplotlib", "torchao", "executorch")

# Prepended to every child's code: the build side cannot be imported, and the child says at exit if any was.
BLOCKER = """
import atexit, importlib.abc, os, sys
BLOCKED = set(os.environ["EDGEEXIT_TEST_BLOCK"].split(","))
class _NoBuildSide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
        return None
sys.meta_path.insert(0, _NoBuildSide())
atexit.register(lambda: print("LOADED:" + ",".join(sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)),
                              file=sys.stderr))
"""


def run_without(code: str, *args: str, blocked=BUILD_SIDE, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`code` (after BLOCKER) in a child Python whose `blocked` packages cannot be imported."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGEEXIT_TEST_BLOCK": ",".join(blocked), "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", BLOCKER + code, *args], capture_output=True, text=True, env=env,
                         cwd=cwd, timeout=300, check=False)
    loaded = [line for line in res.stderr.splitlines() if line.startswith("LOADED:")]
    assert loaded == ["LOADED:"], f"the build side was imported or the child died: {loaded}\n{res.stderr[-3000:]}"
    return res


CLI = "from edgeexit.cli import app\napp(prog_name='edgeexit')\n"


def cli_without(*args: str, blocked=BUILD_SIDE, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return run_without(CLI, *args, blocked=blocked, cwd=cwd)


@pytest.fixture(scope="module")
def bundle(built) -> Path:
    run, _ = built
    return run / "bundle"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(3)
    paths = [folder / "gray.png", folder / "colour.jpg", folder / "wide.png"]
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(paths[0])
    Image.fromarray(rng.integers(0, 256, (24, 31, 3), dtype=np.uint8)).save(paths[1])
    Image.fromarray(rng.integers(0, 256, (9, 40, 3), dtype=np.uint8)).save(paths[2])
    return paths


def test_runtime_and_device_runner_without_torch(bundle, tmp_path):
    """EarlyExitRuntime on onnxruntime gives the bundle's own test-vector logits, and the device runner's profile
    entry times the bundle, with the build side unimportable."""
    code = """
import json, sys
import numpy as np
from edgeexit.bundle import load_bundle
from edgeexit.runtime import EarlyExitRuntime
from edgeexit.device_runner import main, profile_device
b = load_bundle(sys.argv[1])
v = np.load(b.path("vectors.npz"), allow_pickle=False)
rt = EarlyExitRuntime.open(b, "onnxruntime", threads=1)
outs = rt.exit_outputs(v["inputs"])
delta = max(float(np.abs(o["logits"] - v[f"exit{k}_logits"]).max()) for k, o in enumerate(outs))
r = rt.run(v["inputs"])
rt.close()
doc = profile_device(b.root, backend="onnxruntime", batches=[1], rounds=1, calls=1, warmup=0, threads=1)
code = main([sys.argv[1], "--batches", "1", "--rounds", "1", "--calls", "1", "--warmup", "0", "--out", sys.argv[2]])
print(json.dumps({"delta": delta, "n": len(r.predictions), "format": doc["format"], "backend": doc["backend"],
                  "entries": sorted(doc["batches"]["1"]), "main": code}))
"""
    out = tmp_path / "device.json"
    res = run_without(code, str(bundle), str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["delta"] <= 1e-4 and got["n"] > 0
    assert got["format"] == "edgeexit-device-profile/1" and got["backend"] == "onnxruntime"
    assert "full" in got["entries"] and "exit0" in got["entries"] and got["main"] == 0
    assert json.loads(out.read_text())["bundle_checksum"]


def test_predict_and_version_without_torch(bundle, images):
    """`edgeexit predict` on PNG/JPEG files answers as it does with torch installed (same classes, same exits:
    the preprocessing is numpy+PIL either way); `edgeexit --version` works."""
    from edgeexit.predict import predict_files

    want = predict_files(bundle, images)["predictions"]
    res = cli_without("predict", str(bundle), *map(str, images), "--backend", "onnxruntime", "--json")
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout)["predictions"]
    assert [(r["file"], r["class"], r["exit"]) for r in got] == [(r["file"], r["class"], r["exit"]) for r in want]
    assert all(abs(g["score"] - w["score"]) < 1e-5 for g, w in zip(got, want))

    res = cli_without("--version")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.splitlines()[0] == f"edgeexit {metadata.version('edgeexit')}"


def test_profile_and_compare_commands_without_torch(built, tmp_path):
    """`edgeexit profile` (this machine, onnxruntime) and `edgeexit compare --samples 0` on the bundle's test vectors."""
    import shutil

    run, _ = built
    mine = tmp_path / "run"
    shutil.copytree(run / "bundle", mine / "bundle")  # profile writes into the run and the bundle: a copy
    res = cli_without("profile", "--run-dir", str(mine), "--rounds", "1", "--batches", "1", "--calls", "1")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads((mine / "profile.json").read_text())["backend"] == "onnxruntime"
    res = cli_without("compare", str(mine / "bundle"), "--backends", "onnxruntime", "--samples", "0")
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert "PASS" in res.stdout


def test_targets_without_torch():
    """`edgeexit targets` works, and says no target can be exported here (exporting needs torch)."""
    code = "import json\nfrom edgeexit.targets import targets_table\nprint(json.dumps(targets_table()))\n"
    res = run_without(code)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert rows["cpu"]["run_here"] and not any(r["export_here"] for r in rows.values())
    assert cli_without("targets").returncode == 0


@pytest.mark.parametrize("args", [
    ["train", "--run-dir", "{tmp}/run", "--dataset", "synthetic"],
    ["build", "--run-dir", "{tmp}/run", "--dataset", "synthetic", "--epochs", "1"],
    ["eval", "{bundle}"],
    ["compare", "{bundle}", "--backends", "onnxruntime"],  # test-split images come from the data set: torch
])
def test_build_side_commands_say_what_to_install(args, bundle, tmp_path):
    res = cli_without(*[a.format(tmp=tmp_path, bundle=bundle) for a in args])
    assert res.returncode == 2, res.stdout + res.stderr
    err = " ".join(res.stderr.split())
    assert "needs edgeexit's build side (torch)" in err and "pip install 'edgeexit[build]'" in err, err
    assert "Traceback" not in res.stderr and "internal error" not in res.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_engines_without_torch(built, tmp_path):
    """`edgeexit engines` builds a jetson bundle's TensorRT engines (TensorRT-RTX, CPU-only here) with onnx but no
    torch: what a Jetson with `pip install 'edgeexit[jetson]'` does."""
    from typer.testing import CliRunner

    from edgeexit.cli import app

    run, _ = built
    jetson = tmp_path / "jetson"
    res = CliRunner().invoke(app, ["export", "--run-dir", str(run), "--target", "jetson", "--out", str(jetson)])
    assert res.exit_code == 0, res.output
    blocked = tuple(m for m in BUILD_SIDE if m != "onnx")
    res = cli_without("engines", str(jetson), "--out", str(tmp_path / "engines"), "--compute-capability", "8.6",
                      blocked=blocked)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    manifest = json.loads((tmp_path / "engines" / "manifest.json").read_text())
    assert any(rel.endswith(".engine") for rel in manifest["files"])


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _constraints() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "tools" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line)
            assert m, f"not an exact pin: {line!r}"
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_core_dependencies_are_torch_free_ranges():
    project = _pyproject()["project"]
    core = [Requirement(r) for r in project["dependencies"]]
    assert not [str(r) for r in core if any(s.operator in ("==", "===") for s in r.specifier)], "exact pins in core"
    assert not {r.name for r in core} & {"torch", "torchvision", "onnx", "onnxscript", "matplotlib"}
    extras = {name: [Requirement(r) for r in reqs] for name, reqs in project["optional-dependencies"].items()}
    assert {"torch", "torchvision", "onnx", "onnxscript"} <= {r.name for r in extras["build"]}
    everything = core + [r for reqs in extras.values() for r in reqs]
    assert "pycuda" not in {r.name for r in everything}, "pycuda is never imported"
    cuda = [r for r in extras["jetson"] if r.name == "cuda-python"]
    assert cuda and cuda[0].specifier.contains("12.9.0") and not cuda[0].specifier.contains("13.0.0"), \
        "JetPack 6 is CUDA 12: cuda-python 12.x"


def test_constraints_pin_what_the_venv_has():
    """Every pin is what this venv has and lies in pyproject's range; every requirement setup.sh installs is pinned."""
    pins = _constraints()
    for name, version in pins.items():
        assert metadata.version(name) == version, f"{name}: the venv has {metadata.version(name)}, constraints {version}"
    project = _pyproject()["project"]
    setup = (ROOT / "tools" / "setup.sh").read_text()
    assert "-c tools/constraints.txt" in setup
    extras = re.search(r'EXTRAS="\$\{EXTRAS:-([a-z,\-]+)\}"', setup).group(1).split(",")
    installed = list(project["dependencies"]) + [r for e in ["build", *extras] for r in project["optional-dependencies"][e]]
    for req in map(Requirement, installed):
        if req.marker is not None and not req.marker.evaluate():
            continue
        assert req.name in pins, f"{req.name} is installed by tools/setup.sh but not pinned in tools/constraints.txt"
        assert req.specifier.contains(pins[req.name], prereleases=True), f"{req.name}=={pins[req.name]} outside {req}"
