"""Issue 17: a build loads each artifact once per stage and writes its bundle once.

Counts calls of edgeexit's own functions during one tiny real build (QUICK args): how often the checkpoint is
loaded in each stage, how often a target TOML is parsed, how many bundle versions are written, how often each
bundle file is hashed (in this process; the profile's fresh process verifies the bundle once more, on its own).
"""

from __future__ import annotations

import functools
import sys
from collections import Counter
from pathlib import Path

from typer.testing import CliRunner

from conftest import QUICK
from edgeexit.cli import app

STAGES = {  # module: functions whose calls (and what they call) count as that stage
    "edgeexit.pipeline": ("train_stage", "prune_stage", "calibrate_stage", "export_stage"),
    "edgeexit.evaluate": ("evaluate_bundle",),
    "edgeexit.profile": ("profile_bundle",),
    "edgeexit.report": ("write_report",),
}


class Counts:
    def __init__(self) -> None:
        self.stage = "options"
        self.checkpoint: Counter = Counter()  # stage -> load_checkpoint calls
        self.targets = 0  # target TOML files parsed
        self.bundles = 0  # write_bundle calls, but for the deployable bundle beside RUN/bundle
        self.slim = 0  # write_bundle calls for the deployable RUN/bundle-slim (edgeexit.bundle.slim)
        self.dests: list[Path] = []  # where each of `bundles` wrote
        self.hashed: Counter = Counter()  # a bundle file (path inside its version) -> sha256 calls


def _rebind(monkeypatch, original, replacement) -> None:
    """Replace every binding of `original` in edgeexit's loaded modules (`from x import f` copies included)."""
    for name, mod in list(sys.modules.items()):
        if name == "edgeexit" or name.startswith("edgeexit."):
            for attr, value in list(vars(mod).items()):
                if value is original:
                    monkeypatch.setattr(mod, attr, replacement)


def _bundle_file(path: Path) -> str | None:
    """The path of a file inside a bundle version (or its temporary directory); None for a run's own files."""
    parts = Path(path).parts
    for i, part in enumerate(parts):
        if part.startswith(".bundle"):  # the deployable bundle's files counted apart: hard links of the same bytes
            return ("slim:" if part.startswith(".bundle-slim") else "") + "/".join(parts[i + 1:])
    return None


def _count(monkeypatch) -> Counts:
    import importlib

    import edgeexit.bundle.slim  # noqa: F401 (imported before the wraps: a module imported later binds the wrapper)
    import edgeexit.bundle.store as store
    import edgeexit.tomlfiles as tomlfiles
    import edgeexit.train.checkpoint as checkpoint

    counts = Counts()
    for module, names in STAGES.items():
        mod = importlib.import_module(module)
        for name in names:
            fn = getattr(mod, name)

            def staged(*args, _fn=fn, _name=name, **kwargs):
                outer = counts.stage
                counts.stage = _name if outer in ("options", "recipe") else outer  # nested: the outer stage's
                try:
                    return _fn(*args, **kwargs)
                finally:
                    counts.stage = "recipe" if outer == "options" else outer

            _rebind(monkeypatch, fn, functools.wraps(fn)(staged))

    def wrap(original, note):
        def counted(*args, **kwargs):
            note(*args, **kwargs)
            return original(*args, **kwargs)
        _rebind(monkeypatch, original, functools.wraps(original)(counted))

    wrap(checkpoint.load_checkpoint, lambda *a, **k: counts.checkpoint.update([counts.stage]))
    wrap(tomlfiles.read, lambda path, what, *a, **k: setattr(counts, "targets", counts.targets + (what == "target")))
    def wrote(dest, *a, **k):
        if Path(dest).name == "bundle-slim":
            counts.slim += 1
            return
        counts.bundles += 1
        counts.dests.append(Path(dest))
    wrap(store.write_bundle, wrote)

    def hashed(path, *a, **k):
        rel = _bundle_file(path)
        if rel is not None:
            counts.hashed[rel] += 1
    wrap(store.sha256, hashed)
    return counts


def test_a_build_loads_each_artifact_once_per_stage_and_writes_its_bundle_once(tmp_path, monkeypatch):
    counts = _count(monkeypatch)
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["build", "--run-dir", str(run), "--epochs", "1", "--budget", "0.7", *QUICK])
    assert res.exit_code == 0, res.output
    print(f"checkpoint loads per stage {dict(counts.checkpoint)}, target TOML parsed {counts.targets}x, "
          f"bundle written {counts.bundles}x, most hashes of one bundle file {max(counts.hashed.values())} "
          f"({dict(counts.hashed)})")
    # train writes the checkpoint and loads none; prune, calibrate and export load the one they use once each
    assert counts.checkpoint == Counter({"prune_stage": 1, "calibrate_stage": 1, "export_stage": 1}), counts.checkpoint
    assert counts.targets == 1
    assert counts.bundles == 1 and counts.slim == 1
    assert counts.hashed and max(counts.hashed.values()) <= 2, counts.hashed
    # the deployable bundle's big files are hard links whose sha256 carries over: hashed by no one but their loader
    assert not [f for f in counts.hashed if f.startswith("slim:onnx/")], counts.hashed
    # the one write carries the measurements and the report
    bundle = run / "bundle"
    for rel in ("report/eval.json", "report/profile.json", "report/report.json", "report/report.md"):
        assert (bundle / rel).is_file(), rel


def test_a_millisecond_build_takes_two_passes_and_writes_its_bundle_once(tmp_path, monkeypatch):
    """The two-pass route: calibrate for the whole model, export into a scratch directory, profile here, calibrate
    for the milliseconds, export RUN/bundle (with its measurements in that one write). No pruning under a
    millisecond budget."""
    import json

    counts = _count(monkeypatch)
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["build", "--run-dir", str(run), "--epochs", "1", "--budget", "1000ms@cpu", *QUICK])
    assert res.exit_code == 0, res.output
    assert "skipped (--no-prune, a method other than aep, or a millisecond budget)" in res.output.replace("\n", " ")
    assert not (run / "pruned.pt").exists()
    assert counts.checkpoint == Counter({"calibrate_stage": 2, "export_stage": 2}), counts.checkpoint
    assert counts.targets == 1 and counts.bundles == 2 and counts.slim == 1  # the deployable bundle: of the last
    assert counts.dests[-1] == run / "bundle" and counts.dests.count(run / "bundle") == 1, counts.dests
    assert counts.dests[0].parent.parent == run and ".tmp-" in counts.dests[0].parent.name  # the scratch export
    assert [p.name for p in run.iterdir() if ".tmp-" in p.name] == []  # removed
    versions = [p.name for p in run.iterdir() if p.name.startswith(".bundle-v")]
    assert len(versions) == 1, versions  # RUN/bundle has one version: nothing of the first pass is left in the run
    assert json.loads((run / "bundle" / "calibration.json").read_text())["cost_unit"] == "ms"
    assert (run / "bundle" / "report" / "report.json").is_file()


def test_train_and_build_take_the_same_shared_options_and_defaults():
    import typer.main

    from edgeexit.cli_options import TRAIN_SHARED

    commands = typer.main.get_command(app).commands
    defaults = {name: {p.name: p.default for p in commands[name].params} for name in ("train", "build")}
    for name in ("train", "build"):
        assert set(TRAIN_SHARED) <= set(defaults[name]), name
    assert all(defaults["train"][k] == defaults["build"][k] for k in TRAIN_SHARED)
    assert (defaults["build"]["epochs"], defaults["build"]["lr"], defaults["build"]["schedule"]) == (3, 1e-3, "cosine")
    assert {"resume", "adopt", "amp", "patience"} <= set(defaults["train"]) and "resume" not in defaults["build"]
    # a bad shared option is refused by both, before anything is trained
    for name in ("train", "build"):
        res = CliRunner().invoke(app, [name, "--model-kwargs", "[1]", "--model", "m:f"])
        assert res.exit_code == 2 and "--model-kwargs must be a JSON object" in res.output, res.output


def test_report_reads_a_runs_measurements_from_the_run_directory_only(built, tmp_path):
    """One source for each artifact: the bundle's report/eval.json ships, it does not stand in for RUN/eval.json."""
    import shutil

    from conftest import copy_run

    run = copy_run(built, tmp_path / "run", ("checkpoint.pt", "calibration.json", "profile.json"))
    shutil.copytree(built[0] / "bundle", run / "bundle")
    assert (run / "bundle" / "report" / "eval.json").is_file()
    res = CliRunner().invoke(app, ["report", "--run-dir", str(run)])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "the report needs an evaluation" in res.output and "eval.json" in res.output, res.output
    assert not (run / "report.json").exists()


def test_cli_only_parses_and_prints():
    """cli.py stays a thin layer (issue 17: under 350 lines): the recipe, the option checks and the tables live in
    recipe.py, options.py and tables.py."""
    cli = Path(__file__).resolve().parents[1] / "edgeexit" / "cli.py"
    assert len(cli.read_text().splitlines()) < 350
