"""Deployment targets: every shipped TOML loads, and `check_target` tells the truth about this machine."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from edgeexit.errors import ConfigError
from edgeexit.targets import (
    FORMATS,
    PRECISIONS,
    Target,
    check_target,
    list_targets,
    load_target,
    targets_dir,
    targets_table,
)

SHIPPED = ("android", "cpu", "cuda", "ios", "jetson")
GOOD = """
name = "{name}"
description = "a test board"
formats = ["onnx"]
precision = "fp32"
delegate = "CPUExecutionProvider"
batch = {{ min = 1, max = 4 }}
profile = "host"
requires = {requires}
needs_gpu = false
extra = "dev"
"""


@pytest.fixture
def tmp_targets(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEEXIT_TARGETS_DIR", str(tmp_path))
    return tmp_path


def test_shipped_targets_load():
    targets = {t.name: t for t in list_targets()}
    assert tuple(targets) == SHIPPED
    for name, t in targets.items():
        assert t == load_target(name) == load_target(targets_dir() / f"{name}.toml")
        assert set(t.formats) <= set(FORMATS) and set(t.precision) <= set(PRECISIONS)
        assert 1 <= t.batch[0] <= t.batch[1] and t.profile in ("host", "device")
        assert t.description and t.delegate
    assert targets["cpu"].requires == ("onnxruntime",) and not targets["cpu"].needs_gpu
    assert targets["jetson"].needs_gpu and "tensorrt" in targets["jetson"].requires
    assert targets["jetson"].precision == ("fp16", "int8") and targets["jetson"].default_precision == "fp16"
    assert targets["android"].formats == ("pte", "onnx") and targets["android"].extra == "executorch"
    assert targets["android"].precision == ("fp32", "int8") and targets["jetson"].formats[0] == "engine"


def test_cpu_works_here():
    status = check_target(load_target("cpu"))
    assert status.ok, status.reason


@pytest.mark.skipif(
    torch.cuda.is_available() and importlib.util.find_spec("tensorrt") is not None, reason="this is a Jetson-ready host"
)
def test_jetson_says_what_is_missing():
    status = check_target(load_target("jetson"))
    assert not status.ok
    assert "tensorrt" in status.reason or "CUDA device" in status.reason
    if not torch.cuda.is_available():
        assert "needs a CUDA device" in status.reason
    if importlib.util.find_spec("tensorrt") is None:
        assert "missing Python module(s) tensorrt" in status.reason and "pip install -e '.[jetson]'" in status.reason


def test_android_names_the_extra(tmp_targets):
    """A target whose runtime module is missing names the extra that brings it (here a copy of android's file
    that needs a module no machine has, since the test command installs executorch itself)."""
    from edgeexit.presets import __file__ as presets

    text = (Path(presets).parent / "targets" / "android.toml").read_text()
    (tmp_targets / "android.toml").write_text(text.replace('requires = ["executorch"]', 'requires = ["executorch_nowhere"]'))
    status = check_target(load_target("android"))
    assert not status.ok and "pip install -e '.[executorch]'" in status.reason


def test_missing_module_and_dotted_module(tmp_targets):
    requires = '["no_such_module_xyz", "no_such_pkg.sub"]'
    (tmp_targets / "board.toml").write_text(GOOD.format(name="board", requires=requires))
    status = check_target(load_target("board"))
    assert not status.ok and "no_such_module_xyz, no_such_pkg.sub" in status.reason and "'.[dev]'" in status.reason
    (tmp_targets / "board.toml").write_text(GOOD.format(name="board", requires='["json", "os.path"]'))
    assert check_target(load_target("board")) == check_target(load_target(tmp_targets / "board.toml"))
    assert check_target(load_target("board")).ok


def test_unknown_target_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown target") as e:
        load_target("raspberry")
    assert all(name in str(e.value) for name in SHIPPED)
    with pytest.raises(ConfigError, match="no such target file"):
        load_target("/nowhere/board.toml")


@pytest.mark.parametrize(
    "text, message",
    [
        ("name = 'board'\nformats = [", "not valid TOML"),
        (GOOD.format(name="other", requires="[]"), "must match the file name"),
        (GOOD.format(name="board", requires="[]").replace('"fp32"', '"fp8"'), "unknown `precision`"),
        (GOOD.format(name="board", requires="[]").replace('["onnx"]', '["tflite"]'), "unknown `formats`"),
        (GOOD.format(name="board", requires="[]").replace("max = 4", "max = 0"), "bad `batch`"),
        (GOOD.format(name="board", requires="[]").replace('"host"', '"cloud"'), "unknown `profile`"),
        (GOOD.format(name="board", requires="[]").replace("needs_gpu = false", "needs_gpu = 'no'"), "needs_gpu"),
        (GOOD.format(name="board", requires="[1]"), "list of strings"),
        (GOOD.format(name="board", requires="[]").replace("extra =", "extras ="), r"unknown \['extras'\]"),
        (GOOD.format(name="board", requires="[]").replace('delegate = "CPUExecutionProvider"\n', ""), "missing"),
    ],
)
def test_malformed_toml_is_a_config_error(tmp_targets, text, message):
    (tmp_targets / "board.toml").write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        load_target("board")
    assert "board.toml" in str(e.value)
    with pytest.raises(ConfigError, match=message):
        list_targets()


def test_targets_dir_from_env(tmp_targets):
    assert targets_dir() == tmp_targets and list_targets() == []
    (tmp_targets / "board.toml").write_text(GOOD.format(name="board", requires="[]"))
    assert [t.name for t in list_targets()] == ["board"]
    assert isinstance(list_targets()[0], Target)


def test_missing_targets_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEEXIT_TARGETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="EDGEEXIT_TARGETS_DIR"):
        list_targets()


def test_targets_table_rows():
    rows = {row["name"]: row for row in targets_table()}
    assert tuple(rows) == SHIPPED
    assert rows["cpu"]["works_here"] is True and rows["cpu"]["formats"] == "onnx"
    assert rows["jetson"]["precision"] == "fp16, int8"
    for row in rows.values():
        assert list(row) == ["name", "formats", "precision", "requires", "works_here", "export_here", "run_here",
                             "reason"]
        assert row["works_here"] == check_target(load_target(row["name"])).ok


def test_presets_are_package_data_unless_the_env_var_points_elsewhere(tmp_path, monkeypatch):
    """The shipped presets are found with importlib.resources in edgeexit/presets/<kind>/; $ENV_VAR wins."""
    from importlib import resources

    from edgeexit.tomlfiles import names, preset_dir, read

    monkeypatch.delenv("EDGEEXIT_TARGETS_DIR", raising=False)
    package = Path(str(resources.files("edgeexit.presets")))
    assert preset_dir("targets", "EDGEEXIT_TARGETS_DIR") == package / "targets" == targets_dir()
    assert (targets_dir() / "cpu.toml").is_file() and tuple(names(targets_dir())) == SHIPPED
    assert {"macs50", "jetson-5ms"} <= set(names(preset_dir("budgets", "EDGEEXIT_CALIBRATION_DIR", nested=True)))
    monkeypatch.setenv("EDGEEXIT_TARGETS_DIR", str(tmp_path / "mine"))
    assert preset_dir("targets", "EDGEEXIT_TARGETS_DIR") == targets_dir() == tmp_path / "mine"
    assert preset_dir("budgets", "EDGEEXIT_TARGETS_DIR", nested=True) == tmp_path / "mine" / "budgets"
    # the top-level folders of a checkout only link to the package files, for people browsing the repository
    root = Path(__file__).resolve().parents[1]
    for kind, top in (("targets", "targets"), ("budgets", "calibration/budgets"), ("recipes", "calibration/recipes")):
        shipped = sorted(p.name for p in (package / kind).glob("*.toml"))
        assert shipped and sorted(p.name for p in (root / top).glob("*.toml")) == shipped
        for name in shipped:
            link = root / top / name
            assert link.is_symlink() and link.resolve() == (package / kind / name).resolve()
    # a wheel carries them as package data
    setuptools = read(root / "pyproject.toml", "pyproject")["tool"]["setuptools"]
    assert "data-files" not in setuptools
    assert setuptools["package-data"]["edgeexit.presets"] == ["targets/*.toml", "budgets/*.toml", "recipes/*.toml"]
