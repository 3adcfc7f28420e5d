"""tools/bench/deploy.py --quick end to end on the real runtimes (a tiny model it trains itself), so that the bench
cannot rot: its JSON has the structure the integrator reads and its numbers agree with each other. Never speed."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tools" / "bench" / "deploy.py"
sys.path.insert(0, str(SCRIPT.parent))
import deploy  # noqa: E402


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> tuple[dict, Path, str]:
    out = tmp_path_factory.mktemp("bench-deploy")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--threads", "1"], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return json.loads((out / "deploy.json").read_text()), out, proc.stdout


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.slow
def test_every_runtime_and_batch_has_the_four_deployments(bench):
    doc, _, _ = bench
    assert doc["format"] == deploy.FORMAT and doc["quick"] is True and doc["max_drop"] == 0.5
    assert set(doc["runtimes"]) == set(deploy.RUNTIMES)
    for name, rt in doc["runtimes"].items():
        target, batches = deploy.RUNTIMES[name]
        assert rt["target"] == target
        assert rt["backend"] == {"cpu": "onnxruntime", "android": "executorch"}[name]
        assert sorted(int(b) for b in rt["batches"]) == batches == sorted(int(b) for b in rt["shipped"])
        for b, batch in rt["batches"].items():
            assert [r["name"] for r in batch["rows"]] == list(deploy.ROWS)
            assert batch["batch"] == int(b) and batch["images"] % int(b) == 0 and batch["images"] > 0
            assert batch["rounds"] == doc["settings"]["rounds"]


@pytest.mark.slow
def test_numbers_agree_with_each_other(bench):
    doc, _, _ = bench
    for rt in doc["runtimes"].values():
        E = len(rt["exit_names"])
        for b, batch in rt["batches"].items():
            rows = {r["name"]: r for r in batch["rows"]}
            unsplit = rows["unsplit"]
            assert unsplit["exits"] == list(range(E)) and unsplit["drop_pt"] == 0
            assert close(unsplit["ratio_to_unsplit"]["ratio"], 1.0)
            for r in batch["rows"]:
                assert 0 <= r["test_accuracy"] <= 1 and 0 <= r["timed_accuracy"] <= 1
                assert close(r["drop_pt"], 100 * (unsplit["test_accuracy"] - r["test_accuracy"]))
                m = r["ms_per_image"]
                assert 0 < m["p25_ms"] <= m["p50_ms"] <= m["p75_ms"] and m["rounds"] == batch["rounds"]
                q = r["ratio_to_unsplit"]
                assert q["iqr"][0] <= q["ratio"] <= q["iqr"][1] and q["noisy"] == (not batch["noise"]["trusted"])
                assert r["predicted_ms_per_image"] > 0
                assert close(r["prediction_error"], r["predicted_ms_per_image"] / m["p50_ms"] - 1)
                assert r["exit_names"] == [rt["exit_names"][k] for k in r["exits"]]
                if r["exit_fractions"] is not None:  # the early-exit bundles: one share per kept exit
                    assert len(r["exit_fractions"]) == len(r["exits"]) and close(sum(r["exit_fractions"]), 1.0)
            assert batch["max_prediction_error"] == max(abs(r["prediction_error"]) for r in batch["rows"])
            unsplit = next(r for r in batch["rows"] if r["name"] == "unsplit")
            assert unsplit["ratio_prediction_error"] == 0 and batch["drift"] == unsplit["prediction_error"]
            for r in batch["rows"]:  # the predicted ratio to the unsplit model against the measured one
                want = (r["predicted_ms_per_image"] / unsplit["predicted_ms_per_image"]) / \
                    (r["ms_per_image"]["p50_ms"] / unsplit["ms_per_image"]["p50_ms"]) - 1
                assert close(r["ratio_prediction_error"], want)
            # the shipped deployment is the one the search chose at this batch size
            shipped = rt["shipped"][b]
            assert rows["shipped"]["exits"] == shipped["exits"]
            # the static truncation: one exit, as accurate on test as the shipped one (or the unsplit model's cut)
            (k,) = rows["static"]["exits"]
            assert close(rows["static"]["test_accuracy"], rt["static_test_accuracy"][k])
            assert rows["static"]["test_accuracy"] >= rows["shipped"]["test_accuracy"] or k == E - 1
            vs = batch["shipped_vs_static"]
            assert vs["slower_beyond_noise"] == (vs["ratio"] > 1 + batch["noise"]["noise"])
            assert vs["verdict"] == ("noisy" if not batch["noise"]["trusted"] else
                                     "slower" if vs["slower_beyond_noise"] else "not slower")
            assert batch["setup"]["batch"] == int(b) and batch["setup"]["threads"] == 1  # --threads 1 pinned
            assert batch["noise"]["trusted"] == (batch["noise"]["noise"] <= batch["noise"]["bound"])
            # the MACs-first bundle keeps what its pruning kept
            assert rows["mac"]["exits"] == (rt["mac"]["kept_exits"] or list(range(E)))
        for s in rt["shipped"].values():
            assert s["search_seconds"] >= 0 and s["subsets"] == 2 ** E - 1
            assert s["cost_model"]["loo_error"] >= 0 and s["cost_model"]["noise"] >= 0


@pytest.mark.slow
def test_the_markdown_and_the_printout_hold_every_table(bench):
    doc, out, printed = bench
    md = (out / "deploy.md").read_text()
    for name, rt in doc["runtimes"].items():
        for b in rt["batches"]:
            assert f"## {name} ({rt['backend']}), batch {b}" in md
        assert sum(line.startswith("| shipped") for line in md.splitlines()) == sum(
            len(r["batches"]) for r in doc["runtimes"].values())
    assert "shipped / static" in printed and "leave-one-out" in printed


def test_the_static_is_the_fastest_cut_at_equal_or_better_accuracy():
    class Model:  # measured static times: exit 2 is faster than exit 1 (a large head)
        def static_ms(self, k, batch):
            return [1.0, 3.0, 2.0, 4.0][k] * batch

    assert deploy.choose_static(Model(), [0.5, 0.8, 0.8, 0.9], 0.75, 1) == 2
    assert deploy.choose_static(Model(), [0.5, 0.8, 0.7, 0.9], 0.75, 1) == 1
    assert deploy.choose_static(Model(), [0.5, 0.8, 0.7, 0.9], 0.95, 1) == 3  # none: the unsplit model's cut
