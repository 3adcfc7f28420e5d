"""Issue 18, wired into `edgeexit build` (--max-drop / --latency-first; the default: tests/test_deploy_default.py): the unpruned network is profiled
once, a cost model fitted and saved, one search chooses the deployment, the normal export ships it, and the report
puts predicted next to measured latency. Tiny real builds (QUICK args), real onnxruntime."""

from __future__ import annotations

import json

import pytest
from conftest import QUICK
from typer.testing import CliRunner

from edgeexit.bundle import load_bundle
from edgeexit.cli import app
from edgeexit.deploy import CostModel

runner = CliRunner()


def _leftovers(run) -> list[str]:
    """Temporary directories a writer left in the run directory (jsonio's `.NAME.tmp-PID-TOKEN`, the scratch bundle
    of the profile among them); the bundle's version directory is what RUN/bundle links to, not a leftover."""
    return [p.name for p in run.iterdir() if ".tmp-" in p.name]


def _build(run, *args):
    return runner.invoke(app, ["build", "--run-dir", str(run), *args, *QUICK])


@pytest.fixture(scope="module")
def drop_build(tmp_path_factory):
    run = tmp_path_factory.mktemp("latency") / "run"
    res = _build(run, "--epochs", "2", "--max-drop", "5")
    assert res.exit_code == 0, res.output
    return run, res.output


def test_max_drop_build_ships_the_chosen_deployment_with_predicted_vs_measured(drop_build):
    run, output = drop_build
    out = " ".join(output.split())
    assert "cost model (onnxruntime" in out and "leave-one-out error" in out and "profile noise" in out
    assert "deployment search: fastest at most 5 pt below the unsplit model" in out
    assert "chosen (" in out and "best static" in out and "unsplit model" in out
    # the cost model of the UNPRUNED network, stamped with the (scratch) bundle it was fitted on, saved in the run
    cm = CostModel.load(run / "costmodel.json")
    assert cm.num_exits == 3 and cm.ends_at_final and cm.batch_sizes == [1, 64] and cm.backend == "onnxruntime"
    bundle = load_bundle(run / "bundle")
    assert cm.bundle_checksum != bundle.manifest.checksum
    cal = json.loads((bundle.root / "calibration.json").read_text())
    p = cal["policy_params"]
    chosen = [int(k) for k in p["exits"].split(",")]
    # the bundle's exits are the chosen subset of the unpruned network, in order
    assert [e.name for e in bundle.exits] == p["exit_names"].split(",") == [cm.exit_names[k] for k in chosen]
    if chosen != [0, 1, 2]:
        pruned = json.loads((run / "pruned.json").read_text())
        assert pruned["kept_exits"] == chosen and pruned["objective"] == "deployment"
    else:
        assert not (run / "pruned.pt").exists()
    # the chosen deployment meets the drop on validation, and the search never picks one slower than the best static
    assert cal["accuracy"] >= p["full_accuracy"] - 0.05 - 1e-9
    # the thresholds replayed as the bundle applies them give what the search found
    assert cal["accuracy"] == pytest.approx(p["search_accuracy"], abs=1e-12)
    assert cal["mean_cost"] == pytest.approx(p["predicted_ms"], rel=1e-9)
    assert p["predicted_ms"] <= p.get("static_predicted_ms", float("inf")) * (1 + 1e-9)
    assert cal["cost_unit"] == "ms" and cal["score_kind"] == "max_softmax" and len(cal["thresholds"]) == len(chosen)
    assert cal["provenance"]["costmodel_sha256"]
    # the report: predicted next to measured at the operating batch, in JSON, Markdown and the terminal table
    rep = json.loads((run / "report.json").read_text())
    pr = rep["predicted"]
    assert pr["batch"] == 1 and pr["deployment"]["predicted_ms"] == p["predicted_ms"] > 0
    assert pr["deployment"]["measured_ms"] > 0 and pr["full"]["measured_ms"] > 0
    assert abs(pr["deployment"]["relative_error"] - (pr["deployment"]["predicted_ms"] / pr["deployment"]["measured_ms"]
                                                     - 1)) < 1e-9
    md = (run / "report.md").read_text()
    assert "## Predicted vs measured" in md and "| **shipped** |" in md
    assert "shipped deployment predicted" in out and "measured" in out
    assert json.loads((bundle.root / "report" / "report.json").read_text())["predicted"] == pr
    assert not _leftovers(run), _leftovers(run)


def test_report_again_keeps_predicted_vs_measured(drop_build, tmp_path):
    import shutil

    src, _ = drop_build
    run = tmp_path / "run"
    shutil.copytree(src, run, symlinks=True)
    res = runner.invoke(app, ["report", "--run-dir", str(run)])
    assert res.exit_code == 0, res.output
    assert json.loads((run / "report.json").read_text())["predicted"]["deployment"]["measured_ms"] > 0


def test_latency_budget_goes_through_the_same_search_at_the_operating_batch(tmp_path):
    run = tmp_path / "run"
    res = _build(run, "--epochs", "1", "--latency-first", "--budget", "1000ms@cpu", "--batch", "8")
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "deployment search: most accurate within 1000 ms" in out and "batch 8" in out
    assert CostModel.load(run / "costmodel.json").batch_sizes == [1, 8, 64]
    cal = json.loads((run / "bundle" / "calibration.json").read_text())
    assert cal["budget"] == {"kind": "ms", "value": 1000.0, "target": "cpu"} and cal["budget_met"] is True
    assert cal["accuracy"] == pytest.approx(cal["policy_params"]["search_accuracy"], abs=1e-12)
    assert cal["policy_params"]["predicted_ms"] <= 1000.0
    assert json.loads((run / "report.json").read_text())["predicted"]["batch"] == 8
    assert "8" in json.loads((run / "profile.json").read_text())["batches"]


def test_a_drop_nothing_meets_is_refused_before_anything_is_exported(tmp_path):
    run = tmp_path / "run"
    res = _build(run, "--epochs", "1", "--max-drop", "-50")
    assert res.exit_code == 2 and "Traceback" not in res.output
    out = " ".join(res.output.split())
    assert "no deployment meets the allowed accuracy drop" in out and "at least 50 pt above the unsplit model" in out
    assert "best reachable" in out
    # only the trained checkpoint exists: no cost model, pruned network, calibration, bundle or scratch directory
    assert (run / "checkpoint.pt").is_file()
    for name in ("costmodel.json", "pruned.pt", "pruned.json", "calibration.json", "bundle", "profile.json",
                 "report.json"):
        assert not (run / name).exists(), name
    assert not _leftovers(run), _leftovers(run)


@pytest.mark.parametrize("args, message", [
    (["--max-drop", "0.5", "--budget", "0.5"], "the deployment search takes a latency budget"),
    (["--max-drop", "0.5", "--budget", "3ms@android"], "names another target than the build's"),
    (["--max-drop", "0.5", "--batch", "65"], "outside the target's batch range"),
    (["--batch", "4", "--budget", "0.5"], "--batch is the operating batch size of the deployment search"),
    (["--batch", "4", "--method", "eenet"], "--batch is the operating batch size of the deployment search"),
    (["--max-drop", "0.5", "--no-prune"], "--no-prune keeps every exit"),
    (["--max-drop", "nan"], "not a deployment objective"),
    (["--latency-first"], "not a deployment objective"),
    (["--max-drop", "0.5", "--method", "eenet"], "AEP exits scored from their logits"),
], ids=["macs-budget", "other-target", "batch-range", "batch-macs", "batch-eenet", "no-prune", "nan", "no-objective",
        "eenet"])
def test_latency_first_options_are_checked_before_training(tmp_path, args, message):
    run = tmp_path / "run"
    res = _build(run, *args)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert message in " ".join(res.output.split()), res.output
    assert not (run / "checkpoint.pt").exists()


def test_an_early_exit_choice_becomes_the_calibration_the_bundle_applies():
    """What the build writes for an early-exit subset (the tiny synthetic build above always ends up static): the
    chosen thresholds, replayed as calibration.json is applied, give the search's accuracy, exit fractions and
    predicted ms; a single exit is costed as the bundle runs it (one plain call)."""
    import numpy as np
    from test_deploy_search import _synthetic, cost_of

    from edgeexit.deploy import Objective, search_deployments
    from edgeexit.deploy import LatencyCost
    from edgeexit.deploy.stage import deployment_calibration

    scores, correct = _synthetic(exit1_as_final=False)
    labels = np.zeros(len(scores), dtype=np.int64)
    preds = np.where(correct.T, 0, 1)  # [E, N]: right where `correct` says so
    model = cost_of([1.0, 5.0, 10.0], [0.1, 0.1], 0.01, 0.01)
    res = search_deployments(scores, correct, LatencyCost(model, 1), Objective(max_drop=0.5))
    assert res.chosen.kind == "early_exit" and len(res.chosen.exits) >= 2
    assert all(d.cost == model.static_ms(d.exits[0]) for d in res.statics)
    cal = deployment_calibration(res, model, scores.T, preds, labels, score="max_softmax",
                                 exit_names=["e0", "e1", "e2"], target="cpu")
    assert cal.accuracy == res.chosen.accuracy and cal.exit_fractions == pytest.approx(res.chosen.exit_fractions)
    assert cal.mean_cost == pytest.approx(res.chosen.cost, rel=1e-9)
    assert cal.policy_params["exits"] == ",".join(map(str, res.chosen.exits)) and cal.thresholds[-1] == -np.inf
    assert cal.reference_cost == model.full_ms(1) and cal.budget is None
