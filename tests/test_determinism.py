"""Issue 16, item 7: the same seed and data give the same checkpoint bytes and the same thresholds on CPU, twice;
another seed gives other ones (so the test can fail). Each run is its own `python -m edgeexit` process, so
nothing process-bound (hash seeds, pids, clocks, allocator state) can reach the bytes unnoticed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import QUICK

ROOT = Path(__file__).resolve().parents[1]


def edgeexit(*args: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "edgeexit", *args], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def train_and_calibrate(run: Path, seed: int, calibrate: bool = True) -> tuple[str, list | None]:
    edgeexit("train", "--run-dir", str(run), "--epochs", "2", "--lr", "3e-3", "--device", "cpu", "--seed", str(seed),
             *QUICK)
    if calibrate:
        edgeexit("calibrate", "--run-dir", str(run), "--budget", "0.5")
    digest = hashlib.sha256((run / "checkpoint.pt").read_bytes()).hexdigest()
    return digest, json.loads((run / "calibration.json").read_text())["thresholds"] if calibrate else None


def test_same_seed_same_checkpoint_bytes_and_thresholds(tmp_path):
    first, again = train_and_calibrate(tmp_path / "a", 0), train_and_calibrate(tmp_path / "b", 0)
    other = train_and_calibrate(tmp_path / "c", 1, calibrate=False)
    print(f"\ncheckpoint.pt sha256, seed 0 twice: {first[0]} {again[0]}; seed 1: {other[0]}")
    print(f"thresholds, seed 0 twice: {first[1]} {again[1]}")
    assert first == again
    assert any(isinstance(t, float) for t in first[1][:-1])  # a threshold that was chosen, not only ±inf
    assert other[0] != first[0]
    # the wall-clock seconds of each epoch stay out of the checkpoint, beside it
    timing = json.loads((tmp_path / "a" / "checkpoint.timing.json").read_text())
    assert sorted(timing["epoch_seconds"]) == ["0", "1"]
