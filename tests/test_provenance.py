"""Artifacts record what they were made from; stale or foreign inputs, a second writer and a code-running checkpoint
are refused with an error that says what to re-run."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import threading
import zipfile

import pytest
import torch
from conftest import QUICK, copy_run
from typer.testing import CliRunner

from edgeexit.cli import app
from edgeexit.errors import CheckpointError, ConfigError
from edgeexit.rundir import RunDir
from edgeexit.train.checkpoint import load_checkpoint

runner = CliRunner()


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))  # unpickling this creates the file


def test_a_checkpoint_that_would_run_code_is_refused_and_runs_none(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "run" / "checkpoint.pt"
    evil.parent.mkdir()
    torch.save({"format": "edgeexit.checkpoint/1", "payload": _Payload(str(marker))}, evil)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(evil)
    res = runner.invoke(app, ["calibrate", "--run-dir", str(evil.parent)])
    assert res.exit_code == 2 and "refusing" in res.output
    assert not marker.exists()


def test_a_pt2_that_would_run_code_is_refused(built, tmp_path):
    """A .pt2 is a zip the torch backend loads; one carrying a pickled object never reaches torch.export.load."""
    from edgeexit.errors import BundleError
    from edgeexit.runtime.torch_pt2 import check_pt2

    run, _ = built
    src = next((run / "bundle" / "pt2").glob("seg0.pt2"))
    evil = tmp_path / "seg0.pt2"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            zout.writestr(item, zin.read(item.filename))
        prefix = zin.namelist()[0].split("/")[0]
        zout.writestr(f"{prefix}/data/constants/opaque_obj_0", pickle.dumps(_Payload(str(tmp_path / "pwned"))))
    with pytest.raises(BundleError, match="could run code"):
        check_pt2(evil)
    check_pt2(src)  # what edgeexit writes passes


def test_export_refuses_a_calibration_of_another_training(built, tmp_path):
    run = copy_run(built, tmp_path / "run")
    assert runner.invoke(app, ["calibrate", "--run-dir", str(run), "--budget", "0.7"]).exit_code == 0
    res = runner.invoke(app, ["train", "--run-dir", str(run), "--epochs", "1", "--seed", "5", *QUICK])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["export", "--run-dir", str(run)])
    assert res.exit_code == 2 and "calibration.json was made from another checkpoint.pt" in res.output
    assert "edgeexit calibrate" in res.output


def test_a_millisecond_budget_refuses_a_profile_of_another_training(built, tmp_path):
    run = copy_run(built, tmp_path / "run")
    for args in (["calibrate", "--budget", "1.0"], ["export"], ["profile", "--rounds", "3"]):
        assert runner.invoke(app, [*args, "--run-dir", str(run)]).exit_code == 0
    # another checkpoint (a pruned.pt takes its weights from the checkpoint.pt beside it), the first run's profile
    other = copy_run(built, tmp_path / "other", ("checkpoint.pt", "pruned.pt", "pruned.json"))
    shutil.copy(run / "profile.json", other / "profile.json")
    res = runner.invoke(app, ["calibrate", "--run-dir", str(other), "--budget", "5ms@cpu"])
    assert res.exit_code == 2 and "profile.json was made from another" in res.output


def test_a_pruned_network_of_an_earlier_training_is_refused(built, tmp_path):
    run = copy_run(built, tmp_path / "run")
    assert runner.invoke(app, ["prune", "--run-dir", str(run)]).exit_code == 0
    assert RunDir(run).trained() == run / "pruned.pt"
    res = runner.invoke(app, ["train", "--run-dir", str(run), "--epochs", "3", "--resume", "--adopt", *QUICK])
    assert res.exit_code == 0, res.output  # one more epoch; resuming keeps pruned.pt, which is now stale
    res = runner.invoke(app, ["calibrate", "--run-dir", str(run)])
    assert res.exit_code == 2 and "pruned.pt was cut from another training" in res.output and "edgeexit prune" in res.output


def test_a_second_writer_of_a_run_directory_is_refused(tmp_path):
    run = RunDir(tmp_path)
    inside = threading.Event()
    release = threading.Event()

    def hold():
        with run.lock("build"):
            inside.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(10)
        res = runner.invoke(app, ["calibrate", "--run-dir", str(tmp_path)])
        assert res.exit_code == 2 and "is in use" in res.output and f"pid {os.getpid()} (build)" in res.output
        with pytest.raises(ConfigError, match="in use"):
            with RunDir(tmp_path).lock("export"):
                pass
    finally:
        release.set()
        t.join()
    with run.lock("export"):  # free again once the holder is done
        pass


@pytest.mark.parametrize("args, expect", [
    (["--budget", "lots"], "unknown budget preset"),
    (["--policy", "magic"], "unknown calibration policy"),
    (["--score", "vibes"], "unknown exit score"),
    (["--score", "confidence"], "needs EENet exit blocks"),
    (["--target", "nowhere"], "unknown target"),
    (["--target", "cpu", "--precision", "int8"], "does not offer precision int8"),
    (["--target", "cuda", "--precision", "int8"], "does not offer precision int8"),
    (["--target", "ios", "--precision", "fp16"], "does not offer precision fp16"),
    (["--eval-batch-size", "0"], "eval-batch-size"),
])
def test_build_checks_every_option_before_it_trains(tmp_path, args, expect):
    res = runner.invoke(app, ["build", "--run-dir", str(tmp_path), *QUICK, *args])
    assert res.exit_code == 2 and expect in res.output, res.output
    assert not (tmp_path / "checkpoint.pt").exists()


def test_calibration_records_its_checkpoint(built):
    run, _ = built
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["provenance"]["checkpoint"] == "pruned.pt"
    assert cal["provenance"]["checkpoint_sha256"] == RunDir(run).sha256(run / "pruned.pt")


def test_taking_the_lock_removes_only_what_dead_writers_provably_left(tmp_path):
    """A dead writer's temporary directory carries a marker with its pid and token: that goes. Files merely named
    like temporaries (the old rule deleted every `.*.tmp`) are the user's: they stay. See test_trust_files too."""
    from test_trust_files import _dead_writer_temp

    dead = _dead_writer_temp(tmp_path, "checkpoint.pt")
    (tmp_path / ".checkpoint.pt.abc123.tmp").write_bytes(b"the user's, despite the name")
    lookalike = tmp_path / ".bundle.tmp-999999999-abcdef"  # no such pid, but no marker of ours either
    lookalike.mkdir()
    (lookalike / "manifest.json").write_text("{")
    (tmp_path / "notes.txt").write_text("mine")
    with RunDir(tmp_path).lock("train"):
        pass
    assert not dead.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".bundle.tmp-999999999-abcdef", ".checkpoint.pt.abc123.tmp",
                                                          ".edgeexit.lock", "notes.txt"]
    assert (lookalike / "manifest.json").read_text() == "{"
