"""Issue 16, items 5 (CLI, training, calibration, data) and the top-level handler: every bad input or refusing
machine ends in a `what | got | expected | hint` message and a non-zero exit code, never a traceback, and leaves
the earlier artifacts as they were (sha256 before = after)."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeexit.calibrate.calibration import Calibration, read_calibration_file
from edgeexit.cli import app
from edgeexit.errors import CheckpointError, ConfigError, DatasetError
from edgeexit.pipeline import DataConfig, check_calibration_set
from edgeexit.train.checkpoint import load_checkpoint
from edgeexit.train.trainer import TrainConfig
from conftest import QUICK

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under `folder` (the lock file aside: taking the lock writes the holder's pid)."""
    return {str(p.relative_to(folder)): sha(p) for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and p.name != ".edgeexit.lock"}


def refused(res, code: int, *parts: str) -> None:
    """Exit code `code`, every part in the output, and no traceback."""
    assert res.exit_code == code, res.output
    for part in parts:
        assert part in res.output, (part, res.output)
    assert "Traceback" not in res.output and "internal error" not in res.output, res.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A run directory with a 1-epoch tiny checkpoint and its calibration."""
    run = tmp_path_factory.mktemp("trained")
    res = runner.invoke(app, ["train", "--run-dir", str(run), "--epochs", "1", "--device", "cpu", *QUICK])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["calibrate", "--run-dir", str(run), "--budget", "0.7"])
    assert res.exit_code == 0, res.output
    return run


def copy_of(trained: Path, dest: Path) -> Path:
    shutil.copytree(trained, dest)
    return dest


# ------------------------------------------------------------------------------------------------ numeric bounds

BOUNDS = [
    (["train", "--seed", "-1"], "--seed"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--max-steps", "0"], "--max-steps"),
    (["train", "--limit-train", "0"], "--limit-train"),
    (["train", "--limit-val", "0"], "--limit-val"),
    (["train", "--patience", "0"], "--patience"),
    (["train", "--gater-period", "0"], "--gater-period"),
    (["train", "--image-size", "0"], "--image-size"),
    (["build", "--seed", "-1"], "--seed"),
    (["build", "--eval-batch-size", "0"], "--eval-batch-size"),
    (["build", "--limit-test", "0"], "--limit-test"),
    (["prune", "--limit", "0"], "--limit"),
    (["prune", "--show", "0"], "--show"),
    (["calibrate", "--limit", "0"], "--limit"),
    (["calibrate", "--threshold", "1.5"], "--threshold"),
    (["profile", "--rounds", "0"], "--rounds"),
    (["profile", "--calls", "0"], "--calls"),
    (["eval", "BUNDLE", "--batch-size", "0"], "--batch-size"),
    (["eval", "BUNDLE", "--limit", "0"], "--limit"),
    (["compare", "BUNDLE", "--samples", "-1"], "--samples"),
    (["compare", "BUNDLE", "--tolerance", "-1"], "--tolerance"),
]


@pytest.mark.parametrize("args,option", BOUNDS, ids=[" ".join(a) for a, _ in BOUNDS])
def test_numeric_options_are_bounded(args, option, tmp_path):
    run = tmp_path / "run"
    args = [str(tmp_path / "bundle") if a == "BUNDLE" else a for a in args]
    extra = [] if args[0] in ("eval", "compare") else ["--run-dir", str(run)]
    res = runner.invoke(app, [*args, *extra])
    refused(res, 2, f"Invalid value for '{option}'")
    assert not run.exists()  # refused before anything ran


@pytest.mark.parametrize("lr", ["0", "-1e-3", "nan", "inf"])
def test_learning_rate_must_be_positive_and_finite(lr, tmp_path):
    res = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "run"), "--lr", lr, *QUICK])
    refused(res, 2, "lr must be a finite number > 0", f"got: {float(lr)}")
    assert not (tmp_path / "run").exists()


def test_tolerance_must_be_finite(tmp_path):
    res = runner.invoke(app, ["compare", str(tmp_path / "bundle"), "--tolerance", "nan"])
    refused(res, 2, "Invalid value for '--tolerance'")
    res = runner.invoke(app, ["compare", str(tmp_path / "bundle"), "--tolerance", "inf"])
    refused(res, 2, "--tolerance must be a finite number >= 0", "got: inf")


def test_evaluate_bundle_refuses_an_empty_batch(tmp_path):
    from edgeexit.evaluate import evaluate_bundle

    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1"):
        evaluate_bundle(tmp_path / "bundle", batch_size=0)


def test_batches_must_be_positive(tmp_path):
    res = runner.invoke(app, ["profile", "--run-dir", str(tmp_path), "--batches", "1,0"])
    refused(res, 2, "--batches takes batch sizes >= 1", "got: 1,0")


def test_an_image_too_small_for_the_backbone_names_the_smallest_it_takes(tmp_path):
    args = [a if a != "16" or QUICK[i - 1] != "--image-size" else "4" for i, a in enumerate(QUICK)]
    res = runner.invoke(app, ["train", "--run-dir", str(tmp_path), "--epochs", "1", *args])
    refused(res, 2, "tiny_cnn cannot take 4 px images", "got: --image-size 4", "expected: --image-size >= 8")
    assert not (tmp_path / "checkpoint.pt").exists()
    res = runner.invoke(app, ["train", "--run-dir", str(tmp_path), "--epochs", "1", *args, "--image-size", "8",
                              "--max-steps", "1"])
    assert res.exit_code == 0, res.output  # the smallest size named is one it does take


def test_no_samples_and_no_steps_are_refused_in_the_library_too():
    """--limit-train 0 wrote an untrained checkpoint (exit code 0); --max-steps 0 was ignored."""
    with pytest.raises(ConfigError, match="limit_train must be an integer >= 1"):
        DataConfig("synthetic", 16, limit_train=0).load()
    with pytest.raises(ConfigError, match="max steps per epoch must be an integer >= 1"):
        TrainConfig(max_steps_per_epoch=0)
    with pytest.raises(ConfigError, match=r"seed must be an integer in \[0, 2\^32\)"):
        TrainConfig(seed=-1)


# ------------------------------------------------------------------------------------------------ --resume


def test_resume_refuses_changed_settings_unless_adopted(trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    before = hashes(run)
    changed = ["--lr", "1e-2", "--schedule", "constant", "--batch-size", "32"]
    args = ["train", "--run-dir", str(run), "--epochs", "2", "--device", "cpu", "--resume", *QUICK]
    args = [*args[:-len(QUICK)], *[a if a != "256" else "128" for a in QUICK]]  # --limit-train 128
    res = runner.invoke(app, [*args, *changed])
    refused(res, 2, "cannot resume: these settings differ from the checkpoint's", "--lr 0.001 -> 0.01",
            "--schedule 'cosine' -> 'constant'", "--batch-size 64 -> 32", "--limit-train 256 -> 128",
            "--epochs 1 -> 2", "hint: pass the checkpoint's options again, or add --adopt")
    assert hashes(run) == before
    res = runner.invoke(app, [*args, *changed, "--adopt"])
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["epoch"] == 1 and ckpt["train_config"]["lr"] == 1e-2 and ckpt["train_config"]["batch_size"] == 32
    assert ckpt["train_config"]["schedule"] == "constant" and ckpt["data"]["limit_train"] == 128


def test_resume_trains_longer_only_where_no_step_changes(trained, tmp_path):
    """Under the default cosine schedule --epochs sets every step's learning rate: more epochs are a change to adopt
    (under --schedule constant they are not: test_pipeline's resume)."""
    run = copy_of(trained, tmp_path / "run")
    before = hashes(run)
    args = ["train", "--run-dir", str(run), "--epochs", "2", "--device", "cpu", "--resume", *QUICK]
    refused(runner.invoke(app, args), 2, "cannot resume: these settings differ from the checkpoint's", "--epochs 1 -> 2")
    assert hashes(run) == before
    res = runner.invoke(app, [*args, "--adopt"])
    assert res.exit_code == 0, res.output
    assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1


def test_adopt_needs_resume(tmp_path):
    res = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "run"), "--adopt", *QUICK])
    refused(res, 2, "--adopt needs --resume")
    assert not (tmp_path / "run").exists()


def test_resume_refuses_in_the_library(trained, tmp_path):
    from edgeexit.models import ModelConfig
    from edgeexit.pipeline import train_stage
    from edgeexit.rundir import RunDir

    run = copy_of(trained, tmp_path / "run")
    before = hashes(run)
    data = DataConfig("synthetic", 16, limit_train=256, limit_val=128, limit_test=128)
    with pytest.raises(CheckpointError, match="--lr 0.001 -> 0.01"):
        train_stage(RunDir(run), data, ModelConfig(backbone="tiny_cnn", head="conv"),  # the CLI's default head
                    TrainConfig(lr=1e-2, epochs=2, device="cpu"), resume=True, progress=False)
    assert hashes(run) == before


# ------------------------------------------------------------------------------------------------ calibration


def test_a_one_sample_calibration_set_is_refused(trained, tmp_path):
    """It gave -inf thresholds; now fewer than 10 samples are refused, with the number."""
    run = copy_of(trained, tmp_path / "run")
    before = hashes(run)
    res = runner.invoke(app, ["calibrate", "--run-dir", str(run), "--limit", "1"])
    refused(res, 2, "too few calibration samples", "got: 1 samples of the val split", "expected: >= 10 samples")
    assert hashes(run) == before


def test_a_single_class_calibration_set_is_refused():
    with pytest.raises(DatasetError, match="single class.*got: 20 samples, all of class 3"):
        check_calibration_set(np.full(20, 3), "val")
    check_calibration_set(np.arange(20) % 2, "val")  # two classes: fine


BAD_THRESHOLDS = [("abc", "thresholds.0"), (None, "thresholds.0"), ("0.5", "thresholds.0"), (True, "thresholds.0"),
                  (-5, "outside what max_softmax takes"), (1.5, "outside what max_softmax takes"),
                  ("nan", "thresholds.0")]


@pytest.mark.parametrize("value,where", BAD_THRESHOLDS, ids=[repr(v) for v, _ in BAD_THRESHOLDS])
def test_export_refuses_a_bad_threshold_in_calibration_json(value, where, trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    cal = json.loads((run / "calibration.json").read_text())
    assert cal["score_kind"] == "max_softmax"
    cal["thresholds"][0] = value
    (run / "calibration.json").write_text(json.dumps(cal))
    before = hashes(run)
    res = runner.invoke(app, ["export", "--run-dir", str(run)])
    refused(res, 2, "calibration does not match its schema", where, "hint: run `edgeexit calibrate` again")
    assert hashes(run) == before and not (run / "bundle").exists()


@pytest.mark.parametrize("edit,where", [
    (lambda c: c["thresholds"].__setitem__(-1, 0.3), 'its threshold is "-inf"'),
    (lambda c: c.__setitem__("temperatures", [0.0] * len(c["thresholds"])), "temperatures"),
    (lambda c: c.__setitem__("n_samples", "128"), "n_samples"),
    (lambda c: c.update(score_kind="neg_entropy", thresholds=[0.5, *c["thresholds"][1:]]),
     "outside what neg_entropy takes"),
    (lambda c: c.__setitem__("costs", c["costs"][:1]), "costs"),
])
def test_export_refuses_an_inconsistent_calibration_json(edit, where, trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    cal = json.loads((run / "calibration.json").read_text())
    edit(cal)
    (run / "calibration.json").write_text(json.dumps(cal))
    res = runner.invoke(app, ["export", "--run-dir", str(run)])
    refused(res, 2, "calibration does not match its schema", where)
    assert not (run / "bundle").exists()


@pytest.mark.parametrize("text", ["not json", "[1, 2]", "\xff\xfe"])
def test_export_refuses_a_calibration_json_that_is_not_one(text, trained, tmp_path):
    run = copy_of(trained, tmp_path / "run")
    (run / "calibration.json").write_bytes(text.encode("latin-1"))
    res = runner.invoke(app, ["export", "--run-dir", str(run)])
    refused(res, 2, "calibration")
    assert not (run / "bundle").exists()


def test_the_written_calibration_reads_back(trained):
    cal = read_calibration_file(trained / "calibration.json")
    assert isinstance(cal, Calibration) and cal.thresholds[-1] == -np.inf
    assert all(0 <= t <= 1 or np.isinf(t) for t in cal.thresholds)


# ------------------------------------------------------------------------------------------------ the top-level handler


def test_a_run_directory_that_is_a_file(tmp_path):
    path = tmp_path / "run"
    path.write_text("a user's notes\n")
    res = runner.invoke(app, ["train", "--run-dir", str(path), "--epochs", "1", *QUICK])
    refused(res, 3, "a file is in the way where a folder must go", f"got: {path}: File exists", "hint:")
    assert path.read_text() == "a user's notes\n"
    res = runner.invoke(app, ["calibrate", "--run-dir", str(path / "below")])
    refused(res, 3, "a path goes through a file where a folder must be")
    assert path.read_text() == "a user's notes\n"


@pytest.mark.parametrize("exc,code,parts", [
    (PermissionError(errno.EACCES, "Permission denied", "/x/checkpoint.pt"), 3,
     ["permission denied", "got: /x/checkpoint.pt: Permission denied"]),
    (MemoryError(), 3, ["out of memory", "hint: lower --batch-size"]),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried to "
                  "allocate 1099511627776 bytes"), 3, ["out of memory", "DefaultCPUAllocator"]),
    (ConfigError("a stray error", got=1, expected=2), 2, ["error: a stray error | got: 1 | expected: 2"]),
])
def test_the_handler_turns_failures_into_messages(exc, code, parts, monkeypatch, tmp_path):
    """A failure the command itself did not catch (here raised by the training stage) ends as the message."""
    import edgeexit.pipeline

    def fail(*args, **kwargs):
        raise exc

    monkeypatch.setattr(edgeexit.pipeline, "train_stage", fail)
    res = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "run"), *QUICK])
    refused(res, code, *parts)


def test_a_bug_is_named_as_one_before_its_traceback(monkeypatch, tmp_path):
    import edgeexit.pipeline

    def fail(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(edgeexit.pipeline, "train_stage", fail)
    res = runner.invoke(app, ["train", "--run-dir", str(tmp_path / "run"), *QUICK])
    assert res.exit_code == 1 and isinstance(res.exception, ValueError)
    assert "internal error: this is a bug in edgeexit, please report it" in res.output and "boom" in res.output


def _edgeexit(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "COLUMNS": "300"}
    return subprocess.run([sys.executable, "-m", "edgeexit", *args], capture_output=True, text=True, env=env,
                          timeout=600, **kwargs)


def _limit_file_size(size: int):
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    return limit


def test_a_file_size_limit_leaves_the_earlier_checkpoint(trained, tmp_path):
    """`python -m edgeexit` in a process that may not write a file as large as a checkpoint (ulimit -f)."""
    run = copy_of(trained, tmp_path / "run")
    before = hashes(run)
    size = (run / "checkpoint.pt").stat().st_size
    proc = _edgeexit(["train", "--run-dir", str(run), "--epochs", "1", "--device", "cpu", *QUICK],
                     preexec_fn=_limit_file_size(size // 2))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out
    assert "a file is larger than this system or its limits allow" in out and "ulimit -f" in out
    assert "Traceback" not in out
    assert hashes(run) == before and not list(run.glob(".*.tmp"))


@pytest.fixture
def tiny_disk(tmp_path, trained):
    """A tmpfs (a real ENOSPC) with room for one tiny checkpoint, not two: 1.5 times its size."""
    disk = tmp_path / "disk"
    disk.mkdir()
    size = -(-3 * (trained / "checkpoint.pt").stat().st_size // 2 // 4096) * 4  # KiB, whole 4 KiB pages
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}k", "tmpfs", str(disk)], capture_output=True)
    # CI and the set-up run as root (tools/setup.sh installs with apt-get): a refused mount is a broken machine, not a
    # reason to skip the one real ENOSPC test
    assert mounted.returncode == 0, f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}"
    yield disk
    subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_leaves_the_earlier_checkpoint(trained, tiny_disk):
    run = tiny_disk / "run"
    run.mkdir()
    shutil.copy(trained / "checkpoint.pt", run / "checkpoint.pt")
    (run / "notes.txt").write_text("mine\n")
    before = hashes(run)
    proc = _edgeexit(["train", "--run-dir", str(run), "--epochs", "1", "--device", "cpu", *QUICK])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out
    assert "no space left on the device" in out and "No space left on device" in out and "--run-dir" in out
    assert "Traceback" not in out
    assert hashes(run) == before and not list(run.glob(".*.tmp"))  # nothing half-written, nothing lost
