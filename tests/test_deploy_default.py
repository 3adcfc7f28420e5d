"""Issue 18: `edgeexit build` decides on the device by default (--max-drop 0.5 when no budget or objective is given),
and falls back to the MACs budget 0.6 with one line saying why where the deployment search cannot decide; with
--freeze-backbone it searches only deployments that keep the user's own classifier. Option checks without training;
tiny real builds (QUICK args, real onnxruntime) for what a user sees."""

from __future__ import annotations

import json

import pytest
from conftest import QUICK
from typer.testing import CliRunner

from edgeexit.cli import app
from edgeexit.errors import ConfigError
from edgeexit.options import DEFAULT_BUDGET, DEFAULT_MAX_DROP, build_choices, device_blocker

runner = CliRunner()


def _choices(*, target="cpu", precision=None, budget=None, policy=None, score=None, method="aep", **kw):
    return build_choices(target, precision, budget, policy, score, method, 64, **kw)


def test_no_budget_and_no_objective_is_the_default_drop_on_the_device():
    c = _choices()
    assert c.default and c.note is None and c.budget is None and c.batch == 1
    assert c.objective.max_drop == DEFAULT_MAX_DROP == 0.5 and c.objective.latency_ms is None
    assert device_blocker(c, "local") is None  # onnxruntime times the cpu target here
    assert _choices(batch=8).batch == 8  # --batch alone: the default objective at that operating batch
    # what the user names is never the default
    for kw, kind in (({"budget": "0.5"}, "macs_fraction"), ({"budget": "20e6macs"}, "macs"),
                     ({"budget": "1000ms@cpu"}, "ms")):
        c = _choices(**kw)
        assert c.objective is None and not c.default and c.note is None and c.budget.kind == kind
    c = _choices(max_drop=2.0)
    assert not c.default and c.objective.max_drop == 2.0


@pytest.mark.parametrize("kw, why", [
    ({"method": "eenet"}, "--method eenet"),
    ({"method": "budget"}, "--method budget"),
    ({"policy": "fractions"}, "--policy fractions"),
    ({"target": "android", "precision": "int8"}, "int8"),
    ({"target": "jetson"}, "fp16"),
    ({"prune": False}, "--no-prune keeps every exit"),
], ids=["eenet", "budget-method", "policy", "int8", "fp16-target", "no-prune"])
def test_where_the_search_cannot_decide_the_default_is_the_macs_budget_with_the_reason(kw, why):
    c = _choices(**kw)
    assert c.objective is None and not c.default and c.batch is None
    assert c.budget.kind == "macs_fraction" and c.budget.value == float(DEFAULT_BUDGET)
    assert c.note.startswith(f"deciding on MACs (budget {DEFAULT_BUDGET}") and why in c.note, c.note
    with pytest.raises(ConfigError, match="--batch is the operating batch size"):
        _choices(batch=2, **kw)


def test_a_target_that_cannot_be_timed_here_falls_back_unless_profiled_on_the_device():
    c = _choices(target="cuda", precision="fp32")  # TensorRT engines are built on the device, never here
    assert c.default
    why = device_blocker(c, "local")
    assert why is not None and "cuda" in why and "--profile-device" in why
    assert device_blocker(c, "ssh://user@host") is None
    from edgeexit.recipe import settle_default

    said: list[str] = []
    settled = settle_default(c, "local", said.append)
    assert settled.objective is None and settled.budget.value == float(DEFAULT_BUDGET) and len(said) == 1
    assert "deciding on MACs" in said[0]
    said.clear()
    assert settle_default(_choices(), "local", said.append).default and "deciding on the device" in said[0]


def test_a_default_build_decides_on_the_device(tmp_path):
    run = tmp_path / "run"
    res = runner.invoke(app, ["build", "--run-dir", str(run), "--epochs", "1", *QUICK])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert ("deciding on the device: the fastest at most 0.5 pt below the unsplit model at 90 % one-sided confidence "
            "(the default") in out
    assert "deployment search: fastest at most 0.5 pt below the unsplit model" in out
    assert (run / "costmodel.json").is_file() and (run / "search.json").is_file()
    cal = json.loads((run / "bundle" / "calibration.json").read_text())
    assert cal["policy_params"]["max_drop"] == 0.5 and cal["cost_unit"] == "ms"
    rep = json.loads((run / "report.json").read_text())
    assert rep["static_baseline"]["allowed_drop_pt"] == 0.5 and rep["predicted"]["deployment"]["measured_ms"] > 0


def test_a_default_build_that_the_search_cannot_decide_says_why_and_builds_on_macs(tmp_path):
    run = tmp_path / "run"
    res = runner.invoke(app, ["build", "--run-dir", str(run), "--epochs", "1", "--method", "eenet", *QUICK])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert out.count("deciding on MACs (budget 0.6 of the unsplit model's), not on the device") == 1
    assert "--method eenet" in out
    assert not (run / "costmodel.json").exists()
    cal = json.loads((run / "bundle" / "calibration.json").read_text())
    assert cal["budget"]["kind"] == "macs_fraction" and cal["budget"]["value"] == 0.6


def test_freeze_backbone_searches_only_deployments_that_keep_the_users_classifier(tmp_path):
    """With any drop allowed the cheapest deployment would be a static truncation at the first exit; the frozen
    user's classifier must stay, so the chosen deployment ends at the final exit."""
    from test_own_model import DATA, USER, trained_user_model

    _, path = trained_user_model(tmp_path)
    run = tmp_path / "run"
    res = runner.invoke(app, ["build", "--run-dir", str(run), *USER, "--weights", path, "--freeze-backbone", *DATA,
                              "--epochs", "1", "--max-drop", "100"])
    assert res.exit_code == 0, res.output
    out = " ".join(res.output.split())
    assert "only deployments that keep the final exit (your model's own classifier) are searched" in out
    search = json.loads((run / "search.json").read_text())
    final = len(search["exit_names"]) - 1
    assert search["chosen"]["exits"][-1] == final
    assert all(c["exits"][-1] == final for c in search["candidates"])
    assert search["subsets"] == 2 ** final
    cal = json.loads((run / "bundle" / "calibration.json").read_text())
    assert cal["policy_params"]["exit_names"].split(",")[-1] == search["exit_names"][-1]
