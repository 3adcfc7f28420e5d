"""The backend registry: one table says which backends exist, what each runs, whether it works here (with the
reason and what to install), and which runs a bundle; compare, profile and the CLI name no backend themselves."""

from __future__ import annotations

import importlib.util
import io
import json
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from edgeexit.bundle import digest, load_bundle
from edgeexit.errors import ConfigError
from edgeexit.runtime import registry
from edgeexit.runtime.registry import REGISTRY, available_backends, backends_for, default_backend

ROOT = Path(__file__).resolve().parents[1]
TARGET_NAMES = sorted(p.stem for p in (ROOT / "edgeexit" / "presets" / "targets").glob("*.toml"))


def string_literals(path: Path) -> list[tuple[int, str]]:
    """Every string literal of a Python file (f-strings included), with its line."""
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type == tokenize.STRING:
            out.append((tok.start[0], tok.string))
    return out


def named(text: str, names: list[str]) -> list[str]:
    """The names that `text` mentions as a word of their own (`torch-cuda` is not `torch`, `torchrun` neither)."""
    return [n for n in names if re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", text)]


@pytest.mark.parametrize("rel", ["edgeexit/compare.py", "edgeexit/profile.py", "edgeexit/cli.py"])
def test_compare_and_profile_name_no_backend_or_target(rel):
    """Which backend runs what, and which target a local profile is of, come from the registry only."""
    hits = [(line, s) for line, s in string_literals(ROOT / rel) if named(s, [*REGISTRY, *TARGET_NAMES])]
    assert hits == [], f"{rel} names backends or targets in strings: {hits}"
    # and no name-keyed tables outside strings either (e.g. HOST_BACKENDS, _DEFAULTS)
    assert not re.search(r"HOST_BACKENDS|_DEFAULTS|find_spec", (ROOT / rel).read_text())


def test_cli_names_no_backend():
    """cli.py: no backend name as a string of its own, and --backend's help is the registry's list. (Target names
    in the build recipe leave cli.py with the recipe, issue 17 item 3.)"""
    cli = ROOT / "edgeexit" / "cli.py"
    exact = [(line, s) for line, s in string_literals(cli) if s.strip("'\"") in REGISTRY]
    assert exact == [], exact
    lists = [(line, s) for line, s in string_literals(cli) if len(named(s, list(REGISTRY))) >= 2]
    assert lists == [], f"a list of backends written out in cli.py: {lists}"
    from edgeexit.cli_options import BACKEND

    assert BACKEND.help == registry.backend_help() and all(n in BACKEND.help for n in REGISTRY)


def test_every_backend_says_whether_it_works_here_and_what_to_install():
    """available() on this machine agrees with what is installed: a ready backend says "ready" and nothing to
    install; one that is not says why and names what brings it; GPU backends say so without a GPU."""
    for name, spec in REGISTRY.items():
        ok, reason, install = spec.available()
        if ok:
            assert (reason, install) == ("ready", None), name
        else:
            assert reason and install, name
            assert ("CUDA" in reason or "module" in reason or "no CUDAExecutionProvider" in reason), (name, reason)
    a = {n: s.available() for n, s in REGISTRY.items()}
    assert a["onnxruntime"].ok and a["torch"].ok  # dependencies of edgeexit itself
    assert a["executorch"].ok == (importlib.util.find_spec("executorch") is not None)
    import onnxruntime
    import torch

    assert a["onnxruntime-cuda"].ok == ("CUDAExecutionProvider" in onnxruntime.get_available_providers())
    assert a["torch-cuda"].ok == torch.cuda.is_available()
    if not torch.cuda.is_available():
        assert "needs a CUDA device" in a["torch-cuda"].reason and "NVIDIA GPU" in a["torch-cuda"].install
        assert not a["tensorrt"].ok and "'.[tensorrt]'" in a["tensorrt"].install
    if not a["executorch"].ok:
        assert "executorch" in a["executorch"].reason and a["executorch"].install == "pip install -e '.[executorch]'"
    assert [n for n, s in REGISTRY.items() if s.needs_gpu] == ["onnxruntime-cuda", "torch-cuda", "tensorrt"]


def test_a_missing_module_is_named_with_its_install(monkeypatch):
    """The reason names the module that is missing, and the install line says what brings it."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "executorch" else real(m, *a))
    ok, reason, install = REGISTRY["executorch"].available()
    assert (ok, reason, install) == (False, "missing Python module(s) executorch", "pip install -e '.[executorch]'")
    assert "executorch" not in available_backends()


def test_importing_the_registry_imports_no_runtime():
    """available() imports lazily: the registry itself (what the CLI's help reads) loads no runtime, nor numpy."""
    code = ("import sys, edgeexit.runtime.registry as r; r.REGISTRY; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'executorch', 'tensorrt', 'tensorrt_rtx', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_backends_for_the_cpu_bundle(built):
    """An ONNX + .pt2 bundle for target cpu: onnxruntime first (its own), then the others that read its files."""
    run, _ = built
    m = load_bundle(run / "bundle").manifest
    assert (m.runtime, m.delegate) == ("onnxruntime", "CPUExecutionProvider")
    assert default_backend(m) == "onnxruntime"
    assert backends_for(m) == ["onnxruntime", "onnxruntime-cuda", "torch", "torch-cuda"]
    here = available_backends(m)
    assert here[:1] == ["onnxruntime"] and "torch" in here and "executorch" not in here
    assert set(here) == {n for n in backends_for(m) if REGISTRY[n].available().ok}


def test_backends_for_the_android_bundle(android_bundle):
    """A .pte + ONNX + .pt2 bundle for android: executorch first, and its manifest says so."""
    m = load_bundle(android_bundle).manifest
    assert (m.runtime, m.delegate, m.format) == ("executorch", "xnnpack", "pte")
    assert default_backend(m) == "executorch"
    assert backends_for(m) == ["executorch", "onnxruntime", "onnxruntime-cuda", "torch", "torch-cuda"]
    assert registry.emulation_backend(m) == "onnxruntime"
    if REGISTRY["executorch"].available().ok:
        assert registry.measure_backend(m) == ("executorch", None)


def test_a_bundle_whose_runtime_is_missing_is_measured_on_the_emulation(android_bundle, monkeypatch):
    """What `build` measures on when the target's runtime is not here: the CPU emulation, and why, with the install."""
    m = load_bundle(android_bundle).manifest
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "executorch" else real(n, *a))
    here = available_backends(m)
    assert "executorch" not in here and here[0] == "onnxruntime" and "torch" in here
    assert registry.measure_backend(m) == (
        "onnxruntime", "executorch: missing Python module(s) executorch (pip install -e '.[executorch]')")


def resign(bundle: Path, edit) -> None:
    path = bundle / "manifest.json"
    raw = json.loads(path.read_text())
    edit(raw)
    raw["checksum"] = digest(raw)
    path.write_text(json.dumps(raw))


def test_an_older_bundle_without_runtime_still_reads(built, tmp_path):
    """A bundle written before `runtime` existed gets its family from format and delegate, as before."""
    from conftest import copy_bundle

    bundle = copy_bundle(built, tmp_path)
    resign(bundle, lambda raw: raw.pop("runtime"))
    m = load_bundle(bundle).manifest
    assert m.runtime == "onnxruntime" and default_backend(m) == "onnxruntime"


def test_a_runtime_no_backend_runs_is_a_clear_error(built, tmp_path):
    """runtime executorch on a bundle with no .pte: no default backend, a ConfigError naming the way out."""
    from conftest import copy_bundle

    bundle = copy_bundle(built, tmp_path)
    resign(bundle, lambda raw: raw.update(runtime="executorch", delegate="xnnpack"))
    m = load_bundle(bundle).manifest
    with pytest.raises(ConfigError) as e:
        default_backend(m)
    assert "no backend in this edgeexit runs executorch bundles with delegate xnnpack" in str(e.value)
    assert "--backend onnxruntime" in str(e.value)
    assert backends_for(m)[0] == "onnxruntime"  # the bundle's files still run elsewhere


def test_a_jetson_bundle_without_engines_says_build_them():
    """runtime tensorrt, formats onnx only (engines are built on the device): the same error as before."""
    from edgeexit.bundle.manifest import Manifest

    m = Manifest.model_construct(runtime="tensorrt", delegate="tensorrt", format="onnx", formats=["onnx", "pt2"],
                                 target="jetson")
    with pytest.raises(ConfigError, match="TensorRT engines of this jetson bundle are not built yet"):
        default_backend(m)
    assert backends_for(m)[:1] == ["onnxruntime"] and "tensorrt" not in backends_for(m)


def test_the_cpp_runner_runs_the_executorch_family_only():
    from edgeexit.devices import runner_backends

    assert runner_backends("cpp") == ["executorch"]
    assert runner_backends("python") == list(REGISTRY)


def test_targets_say_export_here_and_run_here():
    from edgeexit.targets import export_here, load_target, run_here, targets_table

    rows = {r["name"]: r for r in targets_table()}
    assert rows["cpu"]["export_here"] and rows["cpu"]["run_here"]
    assert rows["jetson"]["export_here"]  # the ONNX segments are written here; engines are built on the device
    assert rows["jetson"]["run_here"] == REGISTRY["tensorrt"].available().ok
    assert rows["android"]["run_here"] == rows["android"]["export_here"] == REGISTRY["executorch"].available().ok
    assert load_target("android").runtime == "executorch" and load_target("cuda").runtime == "tensorrt"
    assert run_here(load_target("cpu")) and export_here(load_target("ios")) == REGISTRY["executorch"].available().ok
