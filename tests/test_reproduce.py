"""The reproductions in tools/reproduce/ run end to end in their --quick mode (a tiny CNN on synthetic data) and write
well-formed JSON and markdown, so that they cannot rot between the full runs. Each runs as a user runs it: its own
process, from the repository root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools" / "reproduce"


def reproduce(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(TOOLS / script), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)


def written(out: Path, stem: str, res: subprocess.CompletedProcess) -> dict:
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads((out / f"{stem}.json").read_text())
    md = (out / f"{stem}.md").read_text()
    assert md.startswith("# ") and "| --- |" in md and "Command: `" in md
    assert report["scale"] and f"--out {out}" in report["command"]
    assert not list(out.glob("*.tmp"))  # nothing left half-written
    return report


def is_fraction(v) -> bool:
    return isinstance(v, float) and 0.0 <= v <= 1.0


def test_distill_trains_and_reads_the_same_runs(tmp_path):
    out = tmp_path / "trained"
    report = written(out, "distill", reproduce("distill.py", "--quick", "--variants", "baseline,both", "--out", str(out)))
    runs = report["runs"]
    assert [r["run"] for r in runs] == ["tiny_cnn/baseline", "tiny_cnn/both"]
    assert runs[0]["train_config"]["distill"] is None and runs[0]["train_config"]["gradient_equilibrium"] is False
    assert runs[1]["train_config"]["distill"] == [3.0, 0.9] and runs[1]["train_config"]["gradient_equilibrium"] is True
    for r in runs:
        assert len(r["test_exit_accuracy"]) == len(r["exit_names"]) == 3
        assert all(is_fraction(a) for a in r["test_exit_accuracy"])
        assert [p["budget"] for p in r["points"]] == [0.3, 0.5, 0.7]
        assert all(p.get("unreachable") or is_fraction(p["test_accuracy"]) for p in r["points"])
        assert r["within_1pt"] is None or r["within_1pt"]["test_accuracy"] >= r["full_test_accuracy"] - 0.01 - 1e-9
        assert r["same_schedule_as_first"]

    # read mode: the same checkpoints read back give the same figures
    again = tmp_path / "read"
    read = written(again, "distill", reproduce("distill.py", "--quick", "--out", str(again), "--runs",
                                               f"base={out / 'tiny_cnn' / 'baseline'}", f"both={out / 'tiny_cnn' / 'both'}"))
    assert [r["run"] for r in read["runs"]] == ["base", "both"]
    for a, b in zip(runs, read["runs"]):
        assert a["test_exit_accuracy"] == b["test_exit_accuracy"] and a["points"] == b["points"]


def test_distill_refuses_a_run_without_checkpoint(tmp_path):
    res = reproduce("distill.py", "--out", str(tmp_path / "o"), "--runs", f"x={tmp_path}")
    assert res.returncode != 0 and "checkpoint.pt" in res.stderr and "Traceback" not in res.stderr
    res = reproduce("distill.py", "--out", str(tmp_path / "o"), "--runs", "no-equals-sign")
    assert res.returncode != 0 and "NAME=DIR" in res.stderr and "Traceback" not in res.stderr


def test_distill_refuses_a_run_still_being_written(tmp_path):
    """A build holding the run (its lock file names a live edgeexit process) may have left an epoch's checkpoint."""
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "edgeexit"])
    try:
        (tmp_path / ".edgeexit.lock").write_text(f"pid {writer.pid} (build)\n")
        res = reproduce("distill.py", "--out", str(tmp_path / "o"), "--runs", f"x={tmp_path}")
        assert res.returncode != 0 and "still being written" in res.stderr and "Traceback" not in res.stderr
    finally:
        writer.kill()
        writer.wait()


def test_aep(tmp_path):
    report = written(tmp_path, "aep", reproduce("aep.py", "--quick", "--modes", "mix", "--out", str(tmp_path)))
    single, (ee,) = report["single"], report["ensembles"]
    assert ee["mode"] == "mix" and is_fraction(single["test_accuracy"])
    assert ee["full"]["params"] > single["params"] and ee["full"]["macs"] > single["macs"]  # the heads cost
    assert ee["pruned"]["params"] <= ee["full"]["params"] and set(ee["kept_exits"]) <= {0, 1, 2}
    for kind in ("full", "pruned"):
        f = ee[kind]
        assert f["accuracy_change"] == pytest.approx(f["test_accuracy"] / single["test_accuracy"] - 1)
        lat = f["latency"]  # measured by the profiler on an exported bundle, with its null test
        assert lat["unsplit_ms"] > 0 and lat["forced_ms"] > 0 and lat["null_test_noise"] >= 0
        assert Path(lat["bundle"], "manifest.json").is_file()
    assert single["latency"]["forced_ms"] > 0
    assert report["paper"]["table3_fmnist_accuracy_change_pct"]["TRAIN-64"]["EEmix*"] == 1.736


def test_eenets(tmp_path):
    report = written(tmp_path, "eenets", reproduce("eenets.py", "--quick", "--lams", "1", "--out", str(tmp_path)))
    (r,) = report["eenets"]
    assert r["lam"] == 1.0 and is_fraction(r["test_accuracy"]) and 0 < r["macs_fraction"] <= 1.5
    assert sum(r["exit_counts"]) == r["test_samples"] and len(r["exit_counts"]) == len(r["exit_names"])
    assert report["paper"]["table9_cifar10_eenet20"]["rows"][1] == ["Pareto", 83.59, "24, 36, 57", 0.56]


def test_budget_gater(tmp_path):
    report = written(tmp_path, "budget_gater", reproduce("budget_gater.py", "--quick", "--out", str(tmp_path)))
    assert [p["budget"] for p in report["points"]] == [0.5, 0.7]
    for p in report["points"]:
        for k in ("classic_fractions", "budget_fractions", "budget_fractions_gater_score"):
            assert is_fraction(p[k]["test_accuracy"]) and p[k]["test_cost_fraction"] > 0
    g = report["gater_rule"]
    assert is_fraction(g["test_accuracy"]) and sum(g["exit_fractions"]) == pytest.approx(1.0)
