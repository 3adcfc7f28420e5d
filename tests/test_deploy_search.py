"""Issue 18's core: the cost model fitted from a profile of the unpruned bundle, and the one search over deployments
(exit subsets x thresholds, static truncations included) it costs."""

from __future__ import annotations

import json
import math
import shutil
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from edgeexit.deploy import (CostModel, LatencyCost, MacCost, Objective, fit_cost_model, make_objective,
                             search_deployments, validation_arrays)
from edgeexit.errors import BudgetError, ConfigError, DeviceError, ShapeError

# --------------------------------------------------------------------------------------------------
# synthetic profiles: entries made from known parameters (see edgeexit.deploy.costmodel)


def _stat(ms: float) -> dict:
    return {"p50_ms": float(ms), "p10_ms": float(ms), "p90_ms": float(ms), "spread": 0.0, "rounds": 10}


def fake_table(S, H, D, L, P=0.0, A=None) -> dict:
    """One batch table of `edgeexit.profile.summarise` for an unpruned bundle whose truth is S, H, D, L, P (and A:
    with it, every exit but the last is also timed answering through its test)."""
    E = len(S)
    exits = []
    for k in range(E):
        seg = S[0] if k == 0 else S[k] - S[k - 1] + H[k - 1]
        cumulative = S[k] + sum(H[:k]) + k * D + L
        exits.append({"index": k, "name": f"e{k}", "macs_fraction": (k + 1) / E,
                      "cumulative": _stat(cumulative), "segment": _stat(seg),
                      "answer": _stat(cumulative + A) if A is not None and k < E - 1 else None,
                      "head": _stat(H[k]) if k < E - 1 else None, "static": _stat(S[k] + P) if k < E - 1 else None})
    return {"full": _stat(S[-1] + P), "exits": exits, "noise": {"noise": 0.0}}


def fake_profile(tables: dict[int, dict]) -> dict:
    return {"format": "edgeexit-profile/2", "backend": "onnxruntime", "device": "local", "target": "cpu",
            "host": "test", "trusted": True, "batches": {str(b): t for b, t in tables.items()},
            "provenance": {"bundle_checksum": "ab" * 32}}


def cost_of(S, H, D, L, batch_tables=None) -> CostModel:
    return fit_cost_model(fake_profile(batch_tables or {1: fake_table(S, H, D, L)}))


def test_cost_model_recovers_a_consistent_profile_and_round_trips(tmp_path):
    S, H, D, L, P = [1.0, 2.5, 4.0], [0.1, 0.2], 0.05, 0.02, 0.03
    m = fit_cost_model(fake_profile({1: fake_table(S, H, D, L, P)}))
    b = m.batches[0]
    assert np.allclose(b.s_ms, S) and np.allclose(b.h_ms, H)
    assert b.boundary_ms == pytest.approx(D) and b.loop_ms == pytest.approx(L) and b.call_ms == pytest.approx(P)
    assert m.error() < 1e-9 and m.ends_at_final and m.bundle_checksum == "ab" * 32
    assert m.stated_error == m.error() and set(b.loo) == {"cumulative0", "cumulative1", "cumulative2"}
    assert b.entries["full"] == S[-1] + P and b.entries["static1"] == S[1] + P  # what it was fitted on, kept
    # a single exit is one plain call of the truncated network: its bare call measured, plus P (at the final exit:
    # the unsplit model, measured)
    assert m.predict([1]) == pytest.approx(2.5 + P) and m.predict([2]) == pytest.approx(4.0 + P)
    m = cost_of(S, H, D, L)
    # forced to the last kept exit: every run; with reach fractions: the later runs weighted by them
    assert m.predict([0, 2]) == pytest.approx(S[0] + L + (S[2] - S[0] + H[0] + D)) == pytest.approx(m.forced_ms([0, 2]))
    assert m.forced_ms([0]) == pytest.approx(S[0] + L)  # the loop around one segment: the profile's cumulative0
    assert m.predict([0, 1, 2], [1, 0.4, 0.1]) == pytest.approx(
        S[0] + L + 0.4 * (S[1] - S[0] + H[0] + D) + 0.1 * (S[2] - S[1] + H[1] + D))
    assert CostModel.from_json(m.to_json()) == m
    # leaving through an exit's test costs A more than answering there forced: paid by those who leave before the last
    A = 0.04
    m_a = fit_cost_model(fake_profile({1: fake_table(S, H, D, L, P, A)}))
    b_a = m_a.batches[0]
    assert b_a.answer_ms == pytest.approx(A) and b_a.call_ms == pytest.approx(P) and b_a.boundary_ms == pytest.approx(D)
    assert set(b_a.loo) == {"cumulative0", "cumulative1", "cumulative2", "answer0", "answer1"} and m_a.error() < 1e-9
    reach = [1, 0.4, 0.1]
    plain = S[0] + L + 0.4 * (S[1] - S[0] + H[0] + D) + 0.1 * (S[2] - S[1] + H[1] + D)
    assert m_a.predict([0, 1, 2], reach) == pytest.approx(plain + A * (1 - 0.1))
    assert m_a.forced_ms([0, 2]) == pytest.approx(m.forced_ms([0, 2]))  # a forced answer leaves through no test
    const, cum = m_a.linear([0, 1, 2])
    leave = np.array(reach) - np.append(reach[1:], 0)  # the share answering at each kept exit
    assert const + leave @ cum == pytest.approx(m_a.predict([0, 1, 2], reach))
    m.save(tmp_path / "costmodel.json")
    assert CostModel.load(tmp_path / "costmodel.json") == m
    m.check_bundle("ab" * 32)
    with pytest.raises(DeviceError, match="another bundle"):
        m.check_bundle("cd" * 32)
    with pytest.raises(ConfigError, match="not a cost model"):
        CostModel.from_json('{"num_exits": "three"}')
    with pytest.raises(ConfigError, match="sorted, distinct"):
        m.predict([2, 0])


def test_cost_model_interpolates_the_live_batch():
    S1, S8 = [1.0, 2.0, 3.0], [4.0, 9.0, 14.0]
    m = fit_cost_model(fake_profile({1: fake_table(S1, [0.1, 0.1], 0.05, 0.0),
                                     8: fake_table(S8, [0.2, 0.2], 0.10, 0.0)}))
    run1, run8 = S1[2] - S1[0] + 0.1 + 0.05, S8[2] - S8[0] + 0.2 + 0.10
    # batch 8, half of it reaches the second run: a live batch of 4, between the profiled 1 and 8
    assert m.predict([0, 2], [1, 0.5], batch=8) == pytest.approx(S8[0] + run1 + (run8 - run1) * 3 / 7)
    # a quarter of a sample on average: that share of one sample's run
    assert m.predict([0, 2], [1, 0.25], batch=1) == pytest.approx(S1[0] + 0.25 * run1)
    const, cum = m.linear([0, 2], batch=8)
    assert const + 0.5 * cum[1] == pytest.approx(m.predict([0, 2], [1, 0.5], batch=8))
    with pytest.raises(ConfigError, match="outside what was profiled"):
        m.predict([0, 2], batch=16)


# --------------------------------------------------------------------------------------------------
# the search on synthetic validation arrays


def _arrays(n=2000, seed=0):
    """Three exits: exit 0 right and confident on the easy 70 %, unsure elsewhere; exit 1 as good as the final exit
    or not (`same`); the final exit right on 95 %."""
    rng = np.random.default_rng(seed)
    easy = rng.random(n) < 0.7
    final = rng.random(n) < 0.95
    c0 = np.where(easy, final | (rng.random(n) < 0.98), rng.random(n) < 0.2)
    s0 = np.where(easy, 0.9 + 0.05 * rng.random(n), 0.3 + 0.3 * rng.random(n))
    return rng, easy, final, c0, s0


def _synthetic(exit1_as_final: bool):
    rng, easy, final, c0, s0 = _arrays()
    c1 = final.copy() if exit1_as_final else final & (rng.random(len(final)) < 0.8)
    correct = np.stack([c0, c1, final], axis=1)
    scores = np.stack([s0, rng.random(len(final)), rng.random(len(final))], axis=1).astype(np.float32)
    return scores, correct


def test_search_picks_a_static_truncation_when_the_latency_table_makes_it_fastest():
    scores, correct = _synthetic(exit1_as_final=True)
    # every boundary costs 5 ms and the loop 2 ms: no early-exit deployment beats the 2 ms truncation at exit 1
    model = cost_of([1.0, 2.0, 10.0], [0.1, 0.1], 5.0, 2.0)
    res = search_deployments(scores, correct, LatencyCost(model, 1), Objective(max_drop=0.5))
    assert res.chosen.kind == "static" and res.chosen.exits == [1] and res.chosen.cost == pytest.approx(2.0)
    assert res.chosen.accuracy >= res.full.accuracy - 0.005
    assert res.subsets == 7 and [d.exits for d in res.statics] == [[0], [1], [2]] and res.full.kind == "full"
    assert any(d.kind == "early_exit" for d in res.candidates)


def test_search_picks_an_early_exit_subset_when_that_is_faster():
    scores, correct = _synthetic(exit1_as_final=False)
    model = cost_of([1.0, 5.0, 10.0], [0.1, 0.1], 0.01, 0.01)
    res = search_deployments(scores, correct, LatencyCost(model, 1), Objective(max_drop=0.5))
    best_static = min(d.cost for d in res.statics if d.accuracy >= res.full.accuracy - 0.005)
    assert res.chosen.kind == "early_exit" and res.chosen.exits[0] == 0 and res.chosen.exits[-1] == 2
    assert res.chosen.cost < 0.6 * best_static and res.chosen.accuracy >= res.full.accuracy - 0.005
    assert res.chosen.thresholds[-1] is None and all(math.isfinite(t) for t in res.chosen.thresholds[:-1])
    assert res.chosen.exit_fractions[0] > 0.5 and sum(res.chosen.exit_fractions) == pytest.approx(1.0)
    # the cost is the model's prediction at the deployment's own reach fractions
    reach = np.cumsum(res.chosen.exit_fractions[::-1])[::-1]
    assert res.chosen.cost == pytest.approx(model.predict(res.chosen.exits, reach))


def test_search_ends_the_network_early_when_a_middle_exit_is_as_good():
    scores, correct = _synthetic(exit1_as_final=True)
    res = search_deployments(scores, correct, LatencyCost(cost_of([1.0, 5.0, 10.0], [0.1, 0.1], 0.01, 0.01), 1),
                             Objective(max_drop=0.5))
    assert res.chosen.exits == [0, 1] and res.chosen.kind == "early_exit"
    # its thresholds replay: the first kept exit lets out the samples scoring at least its threshold
    leave = scores[:, 0] >= res.chosen.thresholds[0]
    assert leave.mean() == pytest.approx(res.chosen.exit_fractions[0])
    acc = np.where(leave, correct[:, 0], correct[:, 1]).mean()
    assert acc == pytest.approx(res.chosen.accuracy)


def test_search_within_a_latency_or_mac_budget():
    scores, correct = _synthetic(exit1_as_final=False)
    model = cost_of([1.0, 5.0, 10.0], [0.1, 0.1], 0.01, 0.01)
    res = search_deployments(scores, correct, LatencyCost(model, 1), Objective(latency_ms=4.0))
    assert res.chosen.cost <= 4.0 and res.chosen.accuracy >= max(d.accuracy for d in res.statics if d.cost <= 4.0)
    macs = MacCost([1.0, 4.0, 5.0], [0.01, 0.01, 0.01], 10.03)
    res = search_deployments(scores, correct, macs, Objective(macs_fraction=0.5))
    assert res.unit == "macs_fraction" and res.chosen.cost <= 0.5 and res.chosen.kind == "early_exit"
    with pytest.raises(ConfigError, match="unit"):
        search_deployments(scores, correct, macs, Objective(latency_ms=3.0))


def test_search_refuses_what_nothing_meets():
    scores, correct = _synthetic(exit1_as_final=False)
    cost = LatencyCost(cost_of([1.0, 5.0, 10.0], [0.1, 0.1], 0.01, 0.01), 1)
    with pytest.raises(BudgetError) as err:
        search_deployments(scores, correct, cost, Objective(latency_ms=0.5))
    msg = str(err.value)
    assert "no deployment fits the budget" in msg and ">= 1 ms" in msg and "exits [0]" in msg
    with pytest.raises(BudgetError) as err:  # 10 pt better than the unsplit model: out of reach
        search_deployments(scores, correct, cost, Objective(max_drop=-10))
    msg = str(err.value)
    assert "allowed accuracy drop" in msg and "best reachable is" in msg
    with pytest.raises(BudgetError) as err:  # within 0.5 pt and 2 ms: only exit 0 fits 2 ms, and it is far worse
        search_deployments(scores, correct, cost, Objective(max_drop=0.5, latency_ms=2.0))
    assert "best reachable within the budget" in str(err.value)
    with pytest.raises(ShapeError):
        search_deployments(scores[:, :2], correct, cost, Objective(max_drop=0.5))
    for bad in ({}, {"latency_ms": -1.0}, {"max_drop": math.nan}, {"latency_ms": 1.0, "macs_fraction": 0.5}):
        with pytest.raises(ConfigError, match="not a deployment objective"):
            make_objective(**bad)
    assert make_objective(max_drop=0.5, latency_ms=3.0) == Objective(max_drop=0.5, latency_ms=3.0)


def _replay(d, scores, correct) -> np.ndarray:
    """Per-sample correctness of deployment `d` replayed on (scores, correct): a sample answers at the first kept exit
    whose score reaches its threshold; the last kept exit answers the rest."""
    answer = np.full(len(scores), -1)
    for k, t in zip(d.exits, d.thresholds):
        answer[(answer < 0) & (True if t is None else scores[:, k] >= t)] = k
    return correct[np.arange(len(scores)), answer]


def _draw(n: int, seed: int):
    """(scores, correct) of three exits from one fixed population: the shallow exits right more often when sure."""
    rng = np.random.default_rng(seed)
    s = rng.random((n, 3)).astype(np.float32)
    p = np.stack([0.55 + 0.44 * s[:, 0], 0.75 + 0.22 * s[:, 1], np.full(n, 0.93)], axis=1)
    return s, rng.random((n, 3)) < p


def test_the_allowed_drop_holds_at_the_stated_confidence():
    scores, correct = _synthetic(exit1_as_final=False)
    cost = LatencyCost(cost_of([1.0, 5.0, 10.0], [0.1, 0.1], 0.01, 0.01), 1)
    plain = search_deployments(scores, correct, cost, Objective(max_drop=2.0, confidence=0.5))
    sure = search_deployments(scores, correct, cost, Objective(max_drop=2.0))
    n, full = len(scores), correct[:, 2].astype(int)
    assert plain.objective.z == 0 and sure.objective.confidence == 0.9 and "90 % one-sided" in sure.objective.describe()
    for res in (plain, sure):
        diff = _replay(res.chosen, scores, correct).astype(int) - full
        assert res.chosen.accuracy == pytest.approx(full.mean() + diff.mean())
        assert res.chosen.diff_se == pytest.approx(diff.std() / math.sqrt(n))  # paired, over the validation samples
        assert diff.mean() - res.objective.z * diff.std() / math.sqrt(n) >= -0.02 - 1e-9
    # without the margin the search sits on the floor; with it, a margin of z * SE above it, for a little more cost
    assert -0.02 <= plain.chosen.accuracy - plain.full.accuracy < -0.02 + 3 / n
    assert sure.chosen.accuracy - sure.full.accuracy >= -0.02 + 1.28 * sure.chosen.diff_se - 1e-9
    assert sure.chosen.cost > plain.chosen.cost and sure.chosen.diff_se > 0
    with pytest.raises(BudgetError, match="90 % one-sided confidence"):
        search_deployments(scores, correct, cost, Objective(max_drop=-10))
    with pytest.raises(ConfigError, match="not a deployment objective"):
        make_objective(max_drop=0.5, confidence=1.0)


def test_the_margin_keeps_the_drop_on_unseen_data():
    """What the margin is for: over 30 validation draws of one population, the plain floor ships a deployment that
    loses more than allowed on a large held-out draw about as often as not; at 90 % confidence, rarely."""
    cost = LatencyCost(cost_of([1.0, 5.0, 10.0], [0.1, 0.1], 0.01, 0.01), 1)
    test_s, test_c = _draw(100_000, seed=999)
    over = {0.5: 0, 0.9: 0}
    for seed in range(30):
        s, c = _draw(2000, seed)
        for conf in over:
            chosen = search_deployments(s, c, cost, Objective(max_drop=1.0, confidence=conf)).chosen
            drop = test_c[:, 2].mean() - _replay(chosen, test_s, test_c).mean()
            over[conf] += drop > 0.01
    assert over[0.5] >= 10 and over[0.9] <= 6, over


def test_validation_arrays_score_as_calibration_does():
    from edgeexit.calibrate import exit_scores

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 50, 4)).astype(np.float32)
    labels = rng.integers(0, 4, 50)
    scores, correct = validation_arrays(logits, labels, temperatures=[2.0, 1.0, 1.0])
    assert scores.shape == correct.shape == (50, 3)
    assert np.array_equal(scores[:, 1], exit_scores(logits, "max_softmax")[1])
    assert np.array_equal(scores[:, 0], exit_scores(logits / 2, "max_softmax")[0])
    assert np.array_equal(correct, (logits.argmax(-1) == labels).T)


def test_search_over_7_exits_and_10000_samples_is_fast():
    """A benchmark: issue 18 asks for seconds; the bound here is generous for a loaded CI box."""
    rng = np.random.default_rng(0)
    n, E = 10_000, 7
    difficulty = rng.random(n)
    p = np.clip(np.linspace(0.3, 0.95, E)[None] + 0.5 - difficulty[:, None], 0.02, 0.99)
    correct = rng.random((n, E)) < p
    scores = (np.where(correct, 0.7, 0.4) + 0.25 * rng.standard_normal((n, E))).astype(np.float32)
    S = np.cumsum(np.linspace(1.0, 2.0, E))
    model = fit_cost_model(fake_profile({1: fake_table(S, [0.05] * (E - 1), 0.03, 0.02),
                                         8: fake_table(S * 6, [0.2] * (E - 1), 0.1, 0.05)}))
    for objective, batch in ((Objective(max_drop=0.5), 1), (Objective(latency_ms=float(S[-1] * 3)), 8)):
        t = time.perf_counter()
        res = search_deployments(scores, correct, LatencyCost(model, batch), objective)
        took = time.perf_counter() - t
        print(f"\ndeployment search, {E} exits x {n} samples, {objective.describe()}, batch {batch}: {took:.2f} s, "
              f"{len(res.candidates)} candidates, chose exits {res.chosen.exits}")
        assert took < 30 and res.subsets == 2 ** E - 1
        assert {tuple(d.exits) for d in res.candidates} == {tuple(k for k in range(E) if m >> k & 1)
                                                              for m in range(1, 2 ** E)}


# --------------------------------------------------------------------------------------------------
# a real tiny profile


def _tested(run_dir) -> None:
    """calibration.json with the thresholds the build profiles the unpruned network with (`tested_thresholds`):
    finite at every exit but the last, so that forced runs pay the earlier exits' tests."""
    from edgeexit.deploy.stage import tested_thresholds

    path = run_dir / "calibration.json"
    cal = json.loads(path.read_text())
    n = len(cal["thresholds"])
    cal["thresholds"] = tested_thresholds(cal["score_kind"], n)[:-1] + [cal["thresholds"][-1]]
    path.write_text(json.dumps(cal))


@pytest.fixture(scope="module")
def unpruned_bundle(built, tmp_path_factory):
    """The tiny build's trained (unpruned) network, calibrated and exported for cpu: every exit, the last one final,
    with the thresholds the build profiles it with."""
    from edgeexit.cli import app

    run, _ = built
    d = tmp_path_factory.mktemp("unpruned")
    shutil.copy(run / "checkpoint.pt", d / "checkpoint.pt")
    cli = CliRunner()
    res = cli.invoke(app, ["calibrate", "--run-dir", str(d), "--budget", "0.7"])
    assert res.exit_code == 0, res.output
    _tested(d)
    res = cli.invoke(app, ["export", "--run-dir", str(d)])
    assert res.exit_code == 0, res.output
    return d / "bundle"


def _worst(errors: list[float]) -> float:
    return max(abs(e) for e in errors)


def test_cost_model_of_one_profile_predicts_deployments_it_never_saw(unpruned_bundle, built, tmp_path):
    """Fitted on a profile of the unpruned network, the model predicts other bundles' profiles: exits [0, 2] (a
    segment that skips exit 1's head), forced to each exit with its tests paid, and the static truncation at exit 1
    run as the one plain call a one-segment bundle is, within its stated error plus the noise of both profiles."""
    from edgeexit.bundle import load_bundle
    from edgeexit.deploy.stage import tested_thresholds
    from edgeexit.profile import profile_bundle

    assert tested_thresholds("max_softmax", 3) == [1.0, 1.0, math.inf]
    assert tested_thresholds("neg_entropy", 2) == [0.0, math.inf]
    bundle = load_bundle(unpruned_bundle)
    first = profile_bundle(bundle, rounds=25, calls=3, warmup=3)
    # what the build profiles: every forced run pays the tests of the exits before it
    assert first["raw"]["executed"]["exit2"] == ["segment0", "test0", "segment1", "test1", "segment2"]
    # leaving through exit 1's test, the earlier test paid
    assert first["raw"]["executed"]["answer1"] == ["segment0", "test0", "segment1", "test1"]
    assert "answer2" not in first["raw"]["executed"]  # the last exit answers without a test
    model = fit_cost_model(first)
    assert model.ends_at_final and model.num_exits == len(bundle.exits) >= 3
    assert model.bundle_checksum == bundle.manifest.checksum and model.backend == "onnxruntime"
    assert CostModel.from_json(model.to_json()) == model
    assert model.stated_error == max(v for b in model.batches for v in b.loo.values())
    macs = MacCost.from_manifest(bundle.manifest).linear(list(range(model.num_exits)))[1]
    assert np.allclose(macs, [e.cumulative_macs / bundle.manifest.full_macs for e in bundle.exits])
    skip = load_bundle(_cut(built, tmp_path / "skip", [0, 2], tested=True)[0])
    static = load_bundle(_cut(built, tmp_path / "static", [1])[0])
    assert [e.name for e in skip.exits] == [model.exit_names[0], model.exit_names[2]] and len(static.exits) == 1
    # The stated bound: the model's own leave-one-out error plus the noise of both profiles. A noisy profile (the
    # profiler's own verdict: the unsplit model timed twice disagrees by > 3 %) is measured again, as the report
    # tells a user to; on a shared 2-core box at batch 1 the entries are ~20 us and a single entry can still jump.
    for attempt in range(3):
        p_skip = profile_bundle(skip, rounds=25, calls=3, warmup=3)
        p_static = profile_bundle(static, rounds=25, calls=3, warmup=3)
        assert p_skip["raw"]["executed"]["exit1"] == ["segment0", "test0", "segment1"]
        errors = []
        for b, table in p_skip["batches"].items():
            rows = table["exits"]
            errors += [model.forced_ms([0], int(b)) / rows[0]["cumulative"]["p50_ms"] - 1,
                       model.forced_ms([0, 2], int(b)) / rows[1]["cumulative"]["p50_ms"] - 1,
                       # everyone leaving through exit 0's test: a deployment nobody goes on from
                       model.predict([0, 2], [1, 0], int(b)) / rows[0]["answer"]["p50_ms"] - 1,
                       model.full_ms(int(b)) / table["full"]["p50_ms"] - 1]
        for b, table in p_static["batches"].items():  # its forced exit 0 is the bundle's one plain call
            errors.append(model.predict([1], batch=int(b)) / table["exits"][0]["cumulative"]["p50_ms"] - 1)
        noise = max(n["noise"] for p in (p_skip, p_static) for n in p["noise"].values())
        bound = model.error() + model.noise() + noise
        print(f"\ncost model on the tiny profile: leave-one-out error {model.error():.3f}, profile noise "
              f"{model.noise():.3f} / {noise:.3f}, bound {bound:.3f}; on the deployments' profiles: "
              f"{', '.join(f'{e:+.3f}' for e in errors)}")
        assert np.median(np.abs(errors)) <= bound
        if _worst(errors) <= bound or (model.trusted and p_skip["trusted"] and p_static["trusted"]):
            break
    assert _worst(errors) <= bound
    # the search runs on it: never slower (predicted) than the fastest static truncation meeting the drop
    scores, correct = _synthetic(exit1_as_final=False)
    res = search_deployments(scores, correct, LatencyCost(model, 1), Objective(max_drop=0.5))
    assert res.chosen.cost <= min(d.cost for d in res.statics if d.accuracy >= res.full.accuracy - 0.005)
    json.loads(res.model_dump_json())  # the report stores it


# --------------------------------------------------------------------------------------------------
# a deployment that ends before the original final exit ships and runs (issue 18, item 5)


def _cut(built, dest, keep: list[int], *, tested: bool = False):
    """A run directory whose pruned.pt keeps exactly `keep` of the tiny build's trained network (as `edgeexit prune`
    writes it), calibrated (`tested`: then every threshold but the last set finite, see `_tested`) and exported for
    cpu through the CLI; returns (bundle, unpruned net, kept sub-network)."""
    from edgeexit.cli import app
    from edgeexit.rundir import RunDir
    from edgeexit.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint

    run, _ = built
    dest.mkdir(parents=True)
    shutil.copy(run / "checkpoint.pt", dest / "checkpoint.pt")
    rd = RunDir(dest)
    ckpt = load_checkpoint(rd.checkpoint)
    net = model_from_checkpoint(ckpt)[0].eval()
    sub = net.select_exits(keep).eval()
    save_checkpoint(rd.pruned, {**{k: v for k, v in ckpt.items() if k != "format"}, "state_dict": sub.state_dict(),
                                "kept_exits": keep, "unpruned_state_dict": ckpt["state_dict"],
                                "ensemble": {"mode": "unif", "weights": [1 / len(keep)] * len(keep)},
                                "provenance": {"checkpoint_sha256": rd.sha256(rd.checkpoint)}})
    cli = CliRunner()
    for args in (["calibrate", "--run-dir", str(dest), "--budget", "0.7"], ["export", "--run-dir", str(dest)]):
        if args[0] == "export" and tested:
            _tested(dest)
        res = cli.invoke(app, args)
        assert res.exit_code == 0, res.output
    return dest / "bundle", net, sub


@pytest.mark.parametrize("keep", [[0, 1], [1]], ids=["exits-0-1", "static-1"])
def test_a_bundle_ending_before_the_final_exit_runs_everywhere_and_passes_compare(built, tmp_path, keep):
    import torch

    from edgeexit.bundle import load_bundle
    from edgeexit.cli import app
    from edgeexit.runtime import EarlyExitRuntime

    path, net, sub = _cut(built, tmp_path / "run", keep)
    bundle = load_bundle(path)
    m = bundle.manifest
    assert len(bundle.exits) == len(keep) and keep[-1] < net.num_exits - 1
    assert [e.name for e in bundle.exits] == [net.exit_names[k] for k in keep]
    # the reference stays the unsplit ORIGINAL model: "fraction of the full model" keeps its meaning
    assert m.reference.macs == m.full_macs > bundle.exits[-1].cumulative_macs
    x = np.random.default_rng(0).standard_normal((16, *bundle.input_shape)).astype(np.float32)
    with torch.no_grad():
        want_last = sub(torch.from_numpy(x))[-1].numpy()
        want_ref = net.unsplit()(torch.from_numpy(x)).numpy()
    for backend in ("onnxruntime", "torch"):
        rt = EarlyExitRuntime.open(bundle, backend)
        try:
            forced = rt.forced(len(keep) - 1).run(x)
            assert np.abs(forced.logits - want_last).max() < 1e-4, backend
            assert np.abs(rt.reference().run(x) - want_ref).max() < 1e-4, backend
            assert rt.run(x).exit_index.max() <= len(keep) - 1
        finally:
            rt.close()
    res = CliRunner().invoke(app, ["compare", str(path), "--backends", "onnxruntime,torch"])
    assert res.exit_code == 0 and "PASS" in res.output, res.output
    if len(keep) > 1:  # and on ExecuTorch (XNNPACK .pte, Python runtime), with its BundledProgram test cases
        android = tmp_path / "android"
        res = CliRunner().invoke(app, ["export", "--run-dir", str(tmp_path / "run"), "--target", "android",
                                       "--out", str(android)])
        assert res.exit_code == 0, res.output
        rt = EarlyExitRuntime.open(load_bundle(android), "executorch")
        try:
            assert np.abs(rt.forced(len(keep) - 1).run(x).logits - want_last).max() < 1e-4
            assert np.abs(rt.reference().run(x) - want_ref).max() < 1e-4
        finally:
            rt.close()
        res = CliRunner().invoke(app, ["compare", str(android)])
        assert res.exit_code == 0 and "PASS" in res.output and "executorch" in res.output, res.output
