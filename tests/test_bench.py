"""The benchmark suite runs: `tools/bench/run_all.py --quick` at tiny size (the shared tiny build as its model), every
script's table printed and its JSON written with the null test beside every ratio. It measures nothing worth
reading; it keeps the scripts from rotting."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("early_exit", "realisation", "overhead", "scaling", "prune_speed", "calibrate_speed")


def test_run_all_quick_writes_every_table_and_json(built, tmp_path):
    out = tmp_path / "bench"
    tiny = out / "scratch" / "tiny"  # the suite's tiny model: the session's tiny build, unpruned (all its exits)
    tiny.mkdir(parents=True)
    shutil.copy(built[0] / "checkpoint.pt", tiny / "checkpoint.pt")
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "bench" / "run_all.py"), "--quick", "--out", str(out),
                          "--threads", "1"], capture_output=True, text=True, timeout=1500,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    summary = json.loads((out / "run_all.json").read_text())
    assert summary["failed"] == [] and set(summary["minutes"]) == set(SCRIPTS)
    docs = {name: json.loads((out / f"{name}.json").read_text()) for name in SCRIPTS}
    for name, doc in docs.items():
        assert doc["machine"]["cpus"] >= 1 and "load_1min" in doc["machine"], name
    # every runtime ratio carries its null test and says whether it is noisy
    ee = docs["early_exit"]["results"]
    backends = {r["backend"] for r in ee}
    assert {"onnxruntime", "torch", "executorch"} <= backends, backends
    assert {r["precision"] for r in ee if r["backend"] == "executorch"} == {"fp32", "int8"}
    for r in ee:
        assert 0 <= r["accuracy_full"] <= 1 and 0 < r["macs_fraction"] <= 1
        for row in r["rows"]:
            assert {"ratio", "iqr", "null_ratio", "noise", "noisy"} <= set(row["early_exit"])
            assert row["measurement"]["setup"]["threads"] == 1
    assert {row["batch"] for r in ee if r["backend"] == "onnxruntime" for row in r["rows"]} == {1, 64}
    rl = docs["realisation"]["results"]
    assert {row["budget"] for r in rl for row in r["rows"]} == {0.3, 0.5, 0.7}
    oh = docs["overhead"]["results"]
    assert all(0 <= row["heads_fraction"] and row["forced"]["null_ratio"] > 0 for r in oh for row in r["rows"])
    assert set(docs["scaling"]["sweeps"]) == {"exits", "batch", "size"}
    assert (out / "scaling.png").stat().st_size > 10_000
    assert docs["calibrate_speed"]["measurement"]["setup"]["threads"] == 1
    for text in ("early exit / unsplit", "forced final exit / unsplit", "realisation", "runtime cost",
                 "AEP pruning", "calibration", "null test"):
        assert text in res.stdout, text
