"""The wheel builds every target without the checkout (issue 21, item 4).

The wheel is built from a copy of the sources (the checkout is not written to), installed into a fresh venv that
cannot import the checkout: no pip, no PYTHONPATH, and a .pth naming this venv's site-packages for the
dependencies (lines of a .pth are added to sys.path, but the .pth files in them, such as the editable install's
finder of this checkout, are not run). From a directory outside the checkout that venv's `edgeexit` console
script builds tiny android and jetson bundles, and writes the device glue (`edgeexit glue --out DIR`: the C++
runner's sources, the Android module, the Swift package) out of the installed package.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import QUICK

ROOT = Path(__file__).resolve().parents[1]
# what the copy of the sources leaves out: VCS, venvs, run outputs, build leftovers
SKIP = shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "build", "dist", "*.egg-info", ".pytest_cache")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    return {**env, "OMP_NUM_THREADS": "1", "PIP_NO_INDEX": "1"}


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=_env(), timeout=900, check=False,
                         **kwargs)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh venv, the wheel it has installed)."""
    base = tmp_path_factory.mktemp("wheel")
    src = Path(shutil.copytree(ROOT, base / "src", ignore=SKIP, symlinks=True))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", base / "dist", src])
    (wheel,) = (base / "dist").glob("edgeexit-*.whl")
    venv = base / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel])
    purelib = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (purelib / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return venv, wheel


def test_wheel_installs_outside_the_checkout(installed, tmp_path):
    venv, wheel = installed
    code = "import edgeexit, json, sys; print(json.dumps([edgeexit.__file__, sys.path]))"
    where, path = json.loads(_run([venv / "bin" / "python", "-c", code], cwd=tmp_path).stdout)
    assert Path(where).resolve().is_relative_to(venv.resolve()), where
    assert not [p for p in path if p and Path(p).resolve() == ROOT], path
    # the core it asks pip for has no torch: the build side is an extra
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    core = [line for line in meta.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert core and not [line for line in core if any(t in line for t in ("torch", "onnxscript", "onnx<", "onnx>"))]
    assert any(line.startswith("Requires-Dist: torch") and 'extra == "build"' in line for line in meta.splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("target, fmt", [("android", "pte"), ("jetson", "onnx")])
def test_wheel_builds_a_target_from_another_directory(installed, tmp_path, target, fmt):
    """`edgeexit build` from the installed wheel, in a folder outside the checkout: a verified bundle for the target."""
    venv, _ = installed
    res = _run([venv / "bin" / "edgeexit", "build", "--target", target, "--run-dir", "run", *QUICK, "--epochs", "1"],
               cwd=tmp_path)
    manifest = json.loads((tmp_path / "run" / "bundle" / "manifest.json").read_text())
    assert manifest["target"] == target and manifest["format"] == fmt, res.stdout[-2000:]
    assert any(rel.endswith(f".{fmt}") for rel in manifest["files"])
    check = "from edgeexit.bundle import load_bundle; import sys; print(load_bundle(sys.argv[1]).manifest.target)"
    assert _run([venv / "bin" / "python", "-c", check, "run/bundle"], cwd=tmp_path).stdout.strip() == target


def test_wheel_writes_the_device_glue(installed, tmp_path):
    """The glue a device developer builds on ships in the wheel: `edgeexit glue` copies it out of the installed
    package (not the checkout), every tree with its build files."""
    venv, _ = installed
    _run([venv / "bin" / "edgeexit", "glue", "--out", "glue"], cwd=tmp_path)
    out = tmp_path / "glue"
    for rel in ("executorch/CMakeLists.txt", "executorch/src/runner_main.cpp", "executorch/schema/manifest.schema.json",
                "android/edgeexit/build.gradle.kts", "ios/Package.swift", "jetson/README.md"):
        assert (out / rel).is_file(), rel
    shipped = json.loads((out / "executorch" / "schema" / "manifest.schema.json").read_text())
    assert shipped == json.loads((ROOT / "edgeexit" / "glue" / "executorch" / "schema" / "manifest.schema.json").read_text())
