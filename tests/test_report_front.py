"""Issue 18, items 3 and 4: the report's accuracy-vs-latency front on the device and a verdict that never misleads.

The verdict cases run the real report code on the figures of real tiny builds (the shared MAC build `built` and a
`--max-drop` build here, which on this tiny model ships a static truncation), edited where a case needs figures a
tiny build does not produce (a noisy profile, an accuracy loss beyond the drop, a batch the target does not run)."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest
from conftest import QUICK
from typer.testing import CliRunner

from edgeexit.bundle import load_bundle
from edgeexit.cli import app
from edgeexit.profile import read_profile_json
from edgeexit.report import DEFAULT_MAX_DROP_PT, markdown, plot_report, report_data

STATIC_NONSENSE = "No static choice is as accurate as the early-exit model"


def _inputs(run):
    bundle = load_bundle(run / "bundle")
    ev = json.loads((run / "eval.json").read_text())
    prof = read_profile_json(run / "profile.json")
    cal_path = bundle.root / "calibration.json"
    cal = json.loads(cal_path.read_text()) if cal_path.is_file() else None
    return bundle, ev, prof, cal


def _profile_with(prof: dict, *, trusted: bool, noise: float | None = None) -> dict:
    """A copy of the profile marked trusted or noisy, every batch's noise figure set to `noise` when given."""
    prof = copy.deepcopy(prof)
    prof["trusted"] = trusted
    for v in prof["noise"].values():
        v["trusted"] = trusted
        if noise is not None:
            v["noise"] = noise
    return prof


@pytest.fixture(scope="module")
def drop_build(tmp_path_factory):
    run = tmp_path_factory.mktemp("front") / "run"
    res = CliRunner().invoke(app, ["build", "--run-dir", str(run), "--epochs", "2", "--max-drop", "5", *QUICK])
    assert res.exit_code == 0, res.output
    return run


def test_the_front_shows_every_static_the_search_candidates_the_unsplit_model_and_the_shipped_point(drop_build):
    run = drop_build
    rep = json.loads((run / "report.json").read_text())
    search = json.loads((run / "search.json").read_text())
    fr = rep["front"]
    pr = rep["predicted"]
    assert fr["batch"] == pr["batch"] == search["batch"]
    assert fr["candidates_source"] == "search.json"
    # the early-exit candidates the search considered, with their predicted ms, all of them drawn
    ee = [c for c in search["candidates"] if c["kind"] == "early_exit"]
    assert len(fr["candidates"]) == len(ee) > 0
    assert {c["ms"] for c in fr["candidates"]} == {c["predicted_ms"] for c in ee}
    # the unsplit model and the shipped point as measured at the operating batch
    prof = read_profile_json(run / "profile.json")
    assert fr["full"]["ms"] == prof["batches"][str(fr["batch"])]["full"]["p50_ms"]
    assert fr["shipped"]["accuracy"] == rep["accuracy"]["early_exit"]
    assert fr["shipped"]["ms"] == pytest.approx(pr["deployment"]["measured_ms"])
    # every static truncation of the bundle: this tiny build ships one exit, which is itself a truncation
    bundle = load_bundle(run / "bundle")
    assert [s["exit"] for s in fr["statics"]] == [e.index for e in bundle.exits]
    png = run / "report-accuracy-cost.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_a_shipped_static_truncation_is_not_compared_as_early_exit(drop_build):
    run = drop_build
    rep = json.loads((run / "report.json").read_text())
    bundle = load_bundle(run / "bundle")
    assert len(bundle.exits) == 1  # what this tiny build ships (test_latency_build says so too)
    sb = rep["static_baseline"]
    assert sb["single_exit"] and sb["allowed_drop_pt"] == 5.0 and sb["allowed_drop_from"] == "the build's --max-drop"
    md = (run / "report.md").read_text()
    assert STATIC_NONSENSE not in md and "early exit wins" not in md.lower()
    assert "This bundle is a static truncation at exit 0" in sb["verdict"] or "No winner is declared" in sb["verdict"]
    assert "this bundle (static truncation)" in md and "| | unsplit model | shipped static truncation |" in md
    # the bundle's own exit is not listed as its own rival
    assert all(c["exit"] != 0 for c in sb["candidates"] if c["exit"] is not None) or len(bundle.exits) > 1


def test_a_static_bundle_is_not_called_early_exit_in_the_tables_and_the_latency_chart(drop_build):
    from rich.console import Console

    from edgeexit.report import latency_chart_words, summary_table

    run = drop_build
    rep = json.loads((run / "report.json").read_text())
    ev = json.loads((run / "eval.json").read_text())
    assert len(ev["exit_histogram"]) == 1
    console = Console(width=200, record=True)
    console.print(summary_table(ev))
    text = console.export_text()
    assert "static truncation vs full model" in text and "early exit" not in text.lower(), text
    words = latency_chart_words(rep)
    assert words["title"].startswith("latency of the shipped static truncation") and "static" in words["shipped"]
    assert "answer here" not in words["shipped"] and "per-exit" not in words["title"]
    # exit 0 of the tiny network is not its final exit: the unsplit model is not drawn as its truncation
    assert "unsplit" not in words["static"]
    md = (run / "report.md").read_text()
    assert "early-exit network" not in md and "the static truncation on the" in rep["predicted"]["measured_how"]
    # an early-exit bundle keeps its words
    many = {**rep, "exits": rep["exits"] * 2}
    many["exits"] = [{**many["exits"][0], "macs_fraction": 0.5}, {**many["exits"][0], "macs_fraction": 1.0}]
    assert latency_chart_words(many)["title"].startswith("per-exit latency")
    assert "(last: the unsplit model)" in latency_chart_words(many)["static"]
    console = Console(width=200, record=True)
    console.print(summary_table({**ev, "exit_histogram": [1, 2]}))
    assert "early exit vs full model" in console.export_text()


def test_a_static_bundle_on_a_quiet_profile_is_described_as_a_truncation(drop_build):
    bundle, ev, prof, cal = _inputs(drop_build)
    prof = _profile_with(prof, trusted=True, noise=0.0)
    ev = copy.deepcopy(ev)
    ev["early_exit_accuracy"] = ev["exit_accuracy"][0] = ev["full_accuracy"] - 0.01  # within the build's 5 pt
    sb = report_data(bundle, ev, prof, cal)["static_baseline"]
    assert sb["verdict"].startswith(f"This bundle is a static truncation at exit 0 ({bundle.exits[0].name}): ")
    assert "-1.00 pt, within the allowed 5 pt (the build's --max-drop)" in sb["verdict"]
    assert STATIC_NONSENSE not in sb["verdict"] and "early exit" not in sb["verdict"].lower()
    # the same loss beyond the drop: no winner, even for a static bundle
    ev["early_exit_accuracy"] = ev["exit_accuracy"][0] = ev["full_accuracy"] - 0.06
    sb = report_data(bundle, ev, prof, cal)["static_baseline"]
    assert "No winner is declared: this static truncation loses 6.00 pt" in sb["verdict"]


def test_the_verdict_declares_no_winner_beyond_the_allowed_drop(built):
    run, _ = built
    bundle, ev, prof, cal = _inputs(run)
    prof = _profile_with(prof, trusted=True)
    ev = copy.deepcopy(ev)
    ev["full_accuracy"] = 0.90
    ev["early_exit_accuracy"] = 0.88  # 2 pt lost: beyond the default 0.5 pt
    # a truncation as accurate as early exit but 1 pt under the unsplit model: also beyond the drop
    ev["exit_accuracy"] = [0.89] + [0.5] * (len(ev["exit_accuracy"]) - 1)
    rep = report_data(bundle, ev, prof, cal)
    sb = rep["static_baseline"]
    assert sb["allowed_drop_pt"] == DEFAULT_MAX_DROP_PT and sb["allowed_drop_from"] == "the default"
    assert "No winner is declared" in sb["verdict"] and "2.00 pt" in sb["verdict"]
    assert "more than the allowed 0.5 pt (the default)" in sb["verdict"]
    assert not sb["static_wins"]
    assert sb["best"] is None or sb["best"]["accuracy"] >= 0.90 - 0.005
    assert "Early exit wins" not in sb["verdict"] and "beats early exit" not in sb["verdict"]
    # the build's own --max-drop, carried by the calibration, replaces the default
    cal2 = copy.deepcopy(cal or {})
    cal2.setdefault("policy_params", {})["max_drop"] = 3.0
    sb2 = report_data(bundle, ev, prof, cal2)["static_baseline"]
    assert sb2["allowed_drop_pt"] == 3.0 and "No winner is declared" not in sb2["verdict"]


def test_a_noisy_profile_says_profile_again_and_declares_nothing(built):
    run, _ = built
    bundle, ev, prof, cal = _inputs(run)
    prof = _profile_with(prof, trusted=False, noise=0.4)
    ev = copy.deepcopy(ev)
    # figures that would otherwise make a static model "beat early exit"
    ev["early_exit_accuracy"] = ev["full_accuracy"]
    rep = report_data(bundle, ev, prof, cal)
    sb = rep["static_baseline"]
    assert "Profile again" in sb["verdict"] and "noisy" in sb["verdict"] and "40.0 %" in sb["verdict"]
    assert not sb["static_wins"]
    for word in ("wins", "beats", "as good as"):
        assert word not in sb["verdict"]
    assert not rep["front"]["trusted"]


def test_rows_are_labelled_with_batches_the_target_runs(built, tmp_path):
    run, _ = built
    bundle, ev, prof, cal = _inputs(run)
    ev = copy.deepcopy(ev)
    ev["latency_fraction_by_batch"] = {"1": 0.7, "8": 0.6, "64": 0.5}
    # the same bundle as an android one (export records the target's batch range, max 8): a batch-64 timing is not a
    # row of its report
    from edgeexit.bundle import BatchRange

    m = bundle.manifest.model_copy(update={"target": "android", "batch": BatchRange(min=1, max=8)})
    android = dataclasses.replace(bundle, manifest=m)
    # figures stamped with that bundle (the report refuses figures of another one)
    ev_a, prof_a = copy.deepcopy(ev), copy.deepcopy(prof)
    ev_a["bundle_content_sha256"] = prof_a["provenance"]["bundle_content_sha256"] = m.content_sha256
    rep = report_data(android, ev_a, prof_a, cal)
    assert rep["target_max_batch"] <= 8
    assert set(rep["latency"]) <= {"1", "8"} and "1" in rep["latency"]
    md = markdown(rep)
    assert "batch 64" not in md and "batch 1 |" in md
    # the cpu target runs 64: its row stays
    rep_cpu = report_data(bundle, ev, prof, cal)
    if rep_cpu["target_max_batch"] >= 64:
        assert "64" in rep_cpu["latency"] and "batch 64" in markdown(rep_cpu)


def test_the_plot_is_written_with_the_front_series(built, tmp_path):
    run, _ = built
    bundle, ev, prof, cal = _inputs(run)
    rep = report_data(bundle, ev, prof, cal)
    fr = rep["front"]
    # a MAC build has no search: no candidates, the rest measured
    assert fr["candidates"] == [] and fr["candidates_source"] is None
    statics = [e for e in rep["exits"] if e["static_ms"] is not None]
    measured = [s for s in fr["statics"] if not s.get("estimated")]
    assert [s["exit"] for s in measured] == [e["index"] for e in statics]
    assert [s["ms"] for s in measured] == [e["static_ms"]["p50_ms"] for e in statics]
    m = bundle.manifest
    if m.exits[-1].cumulative_macs < m.full_macs:  # pruning cut the tail: the last kept exit is a truncation too
        last = m.exits[-1].index
        assert [s["exit"] for s in fr["statics"] if s.get("estimated")] == [last]
        assert any(c["exit"] == last and "last kept exit" in c["choice"]
                   for c in rep["static_baseline"]["candidates"])
    paths = plot_report(rep, tmp_path)
    assert paths["accuracy_cost"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
