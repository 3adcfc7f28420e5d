"""What a person sees around a command's result (issue 21): third-party chatter hidden unless --verbose, --quiet
printing the result only, --threads reaching every runtime, the note on a machine other jobs keep busy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from edgeexit import chatter
from edgeexit.cli import app
from edgeexit.threads import competing_load
from tests.conftest import copy_run

ROOT = Path(__file__).resolve().parents[1]
RUN_FILES = ("checkpoint.pt", "pruned.pt", "pruned.json", "calibration.json")


def _run_copy(built, dest: Path) -> Path:
    run, _ = built
    return copy_run(built, dest, names=tuple(n for n in RUN_FILES if (run / n).exists()))


def _edgeexit(*args: str) -> subprocess.CompletedProcess:
    """The command as a person runs it: its own process, so native code writes to the real descriptor 2."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "edgeexit", *args], capture_output=True, text=True, env=env,
                          timeout=900)


def _chatter(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "Warning" in line or "cpuinfo" in line]


def test_export_hides_third_party_chatter_unless_verbose(built, tmp_path):
    run = _run_copy(built, tmp_path / "run")
    quiet = _edgeexit("export", "--run-dir", str(run), "--target", "android", "--out", str(tmp_path / "a"))
    assert quiet.returncode == 0, quiet.stderr
    assert "bundle:" in quiet.stdout
    assert not _chatter(quiet.stderr), quiet.stderr
    loud = _edgeexit("export", "--run-dir", str(run), "--target", "android", "--out", str(tmp_path / "b"), "--verbose")
    assert loud.returncode == 0, loud.stderr
    assert _chatter(loud.stderr), "torch / ExecuTorch said nothing: the default run proves nothing either"


def test_drop_chatter_keeps_edgeexit_and_unknown_lines():
    own = Path(chatter.__file__).with_name("calibrate") / "policies.py"
    text = ("/venv/lib/python3.11/site-packages/torch/backends/mkldnn/__init__.py:96: UserWarning: TF32 ...\n"
            "  torch._C._set_onednn_allow_tf32(_allow_tf32)\n"
            "W1205 01:04:37.167000 12886 torch/utils/_pytree.py:630] <enum 'KernelPreference'> is an Enum\n"
            "[cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version\n"
            "Warning in XNNPACK: unsupported hardware\n"
            f"{own}:247: CalibrationWarning: exit 2 gets no sample\n"
            "  _warnings.warn(note, CalibrationWarning, stacklevel=2)\n"
            "note: left /x/.bundle-v1 (not a bundle version edgeexit can prove it wrote)\n")
    kept = chatter.drop_chatter(text).splitlines()
    assert kept == [f"{own}:247: CalibrationWarning: exit 2 gets no sample",
                    "  _warnings.warn(note, CalibrationWarning, stacklevel=2)",
                    "note: left /x/.bundle-v1 (not a bundle version edgeexit can prove it wrote)"]


def test_quiet_prints_the_result_only(built, tmp_path):
    run = _run_copy(built, tmp_path / "run")
    args = ["calibrate", "--run-dir", str(run), "--budget", "0.7"]
    normal = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert normal.exit_code == 0, normal.output
    assert "using " in normal.output  # a progress line
    quiet = CliRunner().invoke(app, [*args, "--quiet"], env={"COLUMNS": "200"})
    assert quiet.exit_code == 0, quiet.output
    assert "using " not in quiet.output
    assert "expected accuracy" in quiet.output  # the result
    both = CliRunner().invoke(app, [*args, "--quiet", "--verbose"])
    assert both.exit_code == 2 and "contradict" in both.output
    assert "Traceback" not in both.output


def test_busy_machine_note_suggests_threads(built, tmp_path, monkeypatch):
    assert competing_load(None, load=0.4, ncores=2) is None  # an idle machine: nothing to say
    note = competing_load(None, load=3.0, ncores=2)
    assert note is not None and "--threads 1" in note and "3.0 on 2 cores" in note
    assert "--threads 6" in competing_load(None, load=9.6, ncores=16)
    assert competing_load(6, load=9.6, ncores=16) is None  # it already fits the idle cores
    assert competing_load(16, load=9.6, ncores=16) is not None

    import edgeexit.threads as pools

    run = _run_copy(built, tmp_path / "run")
    monkeypatch.setattr(pools, "load_average", lambda: 7.5)
    monkeypatch.setattr(pools, "cores", lambda: 8)
    res = CliRunner().invoke(app, ["calibrate", "--run-dir", str(run), "--budget", "0.7"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "load average is 7.5 on 8 cores" in res.output and "--threads 1" in res.output
    res = CliRunner().invoke(app, ["calibrate", "--run-dir", str(run), "--budget", "0.7", "--quiet"])
    assert "load average" not in res.output


def test_threads_reach_torch_onnxruntime_and_executorch(tmp_path):
    """One setting, every pool: run where nothing has started a pool yet (a fresh process, as the CLI is)."""
    code = """
import json, torch
from edgeexit import threads
from edgeexit.ort_session import onnxruntime, pool_threads
from edgeexit.runtime import make_backend
from executorch.extension.pybindings import portable_lib
threads.choose(3)  # not this machine's core count: the default would pass too
et = make_backend("executorch")
ort = make_backend("onnxruntime")
pt = make_backend("torch", threads=1)  # a caller's own count still wins
print(json.dumps({"torch": torch.get_num_threads(), "ort_pool": pool_threads(), "ort": ort.threads,
                  "executorch": portable_lib._threadpool_get_thread_count(), "et": et.threads, "pt": pt.threads}))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("OMP_NUM_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    import json

    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"torch": 1, "ort_pool": 3, "ort": 3, "executorch": 3, "et": 3, "pt": 1}, got


def test_every_model_command_takes_threads_quiet_and_verbose():
    import typer

    group = typer.main.get_command(app)
    for name in ("train", "build", "export", "eval", "profile", "compare", "predict", "calibrate", "prune"):
        opts = {o for p in group.commands[name].params for o in p.opts}
        assert {"--threads", "--quiet", "--verbose"} <= opts, name
