"""Threshold calibration on synthetic per-exit outputs whose right answers are known by construction."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch

from edgeexit.calibrate import (
    FRACTION_SCHEMES,
    SCORE_KINDS,
    Budget,
    Calibration,
    CalibrationWarning,
    Recipe,
    anytime_curve,
    budget_curve,
    calibrate,
    calibrate_fixed,
    calibrate_fractions,
    calibrate_gater,
    calibrate_search,
    exit_scores,
    list_presets,
    load_budget_preset,
    load_recipe,
    plot_curves,
    score_outputs,
    simulate,
    target_fractions,
)
from edgeexit.errors import BudgetError, ConfigError, DatasetError, ShapeError
from edgeexit.models.scores import score_fn_torch

COSTS = np.array([1.0, 2.0, 3.0, 4.0])  # cumulative cost of answering at each of 4 exits
REF = 4.0  # the unsplit model's cost: here equal to the last exit's, so fractions of either agree


def synthetic(n: int, seed: int, n_exits: int = 4, n_classes: int = 10):
    """Per-exit logits where later exits are stronger and each sample has a difficulty (continuous: no ties)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    ease = rng.uniform(size=n)
    logits = rng.normal(size=(n_exits, n, n_classes))
    for k in range(n_exits):
        logits[k, np.arange(n), labels] += (1.0 + k) * 2.0 * ease
    return logits.astype(np.float32), labels


def designed(n_per_type: int = 20):
    """Three exits, three sample types whose right exit is known.

    Type A: right everywhere, confident at exit 0. Type B: wrong at exit 0 (not confident there),
    right and confident at exit 1. Type C: right only at the final exit, never confident before it.
    Answering each type at its own exit is 100 % accurate at mean cost (1 + 2 + 4) / 3.
    """
    n_classes = 3
    n = 3 * n_per_type
    kind = np.repeat([0, 1, 2], n_per_type)
    labels = np.tile(np.arange(n_classes), n)[:n]
    wrong = (labels + 1) % n_classes
    logits = np.zeros((3, n, n_classes), dtype=np.float32)
    rows = np.arange(n)
    jitter = np.linspace(0.0, 0.5, n).astype(np.float32)
    # exit 0: A confident and right; B and C lean weakly to a wrong class
    logits[0, rows, np.where(kind == 0, labels, wrong)] = np.where(kind == 0, 6.0 + jitter, 0.5 + jitter)
    # exit 1: A and B confident and right; C leans weakly to a wrong class
    logits[1, rows, np.where(kind <= 1, labels, wrong)] = np.where(kind <= 1, 6.0 + jitter, 0.5 + jitter)
    logits[2, rows, labels] = 1.0 + jitter  # final: right on everything
    return logits, labels, kind, np.array([1.0, 2.0, 4.0])


# ------------------------------------------------------------------------------------------------ scores


def test_scores_match_hand_computed_values():
    logits = np.log(np.array([[[1.0, 3.0, 0.0001]]], dtype=np.float32))  # p ~ (0.25, 0.75, 0)
    p = np.array([1.0, 3.0, 0.0001]) / 4.0001
    assert exit_scores(logits, "max_softmax")[0, 0] == pytest.approx(p.max(), abs=1e-6)
    assert exit_scores(logits, "margin")[0, 0] == pytest.approx(p[1] - p[0], abs=1e-6)
    assert exit_scores(logits, "neg_entropy")[0, 0] == pytest.approx((p * np.log(p)).sum(), abs=1e-5)


def test_scores_are_stable_for_huge_logits():
    logits, _ = synthetic(50, seed=1)
    for kind in ("max_softmax", "margin", "neg_entropy"):
        shifted = exit_scores(logits + np.float32(1e4), kind)
        assert np.isfinite(shifted).all()
        np.testing.assert_allclose(shifted, exit_scores(logits, kind), atol=2e-3)
        assert np.isfinite(exit_scores(logits * 1e3, kind)).all()


@pytest.mark.parametrize("kind", SCORE_KINDS)
def test_torch_scores_match_numpy(kind):
    logits, _ = synthetic(64, seed=2)
    conf = np.random.default_rng(3).uniform(size=logits.shape[:2]).astype(np.float32)
    expected = exit_scores(logits, kind, conf)
    fn = score_fn_torch(kind)
    for k in range(logits.shape[0]):
        got = fn(torch.from_numpy(logits[k]), torch.from_numpy(conf[k]).reshape(-1, 1)).numpy()
        assert got.shape == (logits.shape[1],)
        np.testing.assert_allclose(got, expected[k], atol=1e-6)


def test_score_errors():
    logits, _ = synthetic(8, seed=0)
    with pytest.raises(ConfigError, match="unknown exit score kind"):
        exit_scores(logits, "softmax")
    with pytest.raises(ConfigError, match="reads per-exit confidences"):
        exit_scores(logits, "confidence")
    with pytest.raises(ShapeError, match=r"\[0, 1\]"):
        exit_scores(logits, "gater", np.full(logits.shape[:2], 1.5))
    with pytest.raises(ShapeError, match="two classes"):
        exit_scores(logits[:, :, :1], "margin")


# ------------------------------------------------------------------------------------------------ the rule


def test_simulate_follows_the_first_exit_rule():
    scores = np.array([[0.9, 0.2, 0.2, 0.5],
                       [0.0, 0.8, 0.1, 0.0],
                       [0.0, 0.0, 0.0, 0.0]])
    preds = np.array([[1, 0, 0, 3], [1, 1, 0, 0], [1, 1, 2, 0]])
    labels = np.array([1, 1, 2, 3])
    # sample 3 scores exactly the threshold at exit 0: >= lets it leave; the final threshold is ignored
    sim = simulate(scores, preds, labels, [0.5, 0.5, math.inf], [1.0, 2.0, 4.0])
    assert sim.exit_index.tolist() == [0, 1, 2, 0]
    assert sim.correct.all() and sim.accuracy == 1.0
    assert sim.mean_cost == pytest.approx((1 + 2 + 4 + 1) / 4)
    assert sim.exit_fractions.tolist() == [0.5, 0.25, 0.25]


# ------------------------------------------------------------------------------------------------ fractions


@pytest.mark.parametrize("scheme", FRACTION_SCHEMES)
@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.8])
def test_target_fractions_meet_the_budget_and_are_geometric(scheme, fraction):
    limit = fraction * COSTS[-1]
    q, param = target_fractions(COSTS, limit, scheme)
    assert q.sum() == pytest.approx(1.0) and (q > 0).all()
    assert q @ COSTS == pytest.approx(limit, rel=1e-9)
    if scheme == "msdnet":  # q_k = z p^k over all exits
        np.testing.assert_allclose(q[1:] / q[:-1], param, rtol=1e-9)
    else:  # share `param` of those reaching each non-final exit leaves there
        reaching = 1.0 - np.concatenate(([0.0], np.cumsum(q)[:-1]))
        np.testing.assert_allclose(q[:-1] / reaching[:-1], param, rtol=1e-9)


def test_target_fractions_at_the_ends():
    q, p = target_fractions(COSTS, 10.0)
    assert q.tolist() == [0, 0, 0, 1] and p == math.inf
    q, p = target_fractions(COSTS, 1.0)
    assert q.tolist() == [1, 0, 0, 0] and p == 0.0


@pytest.mark.parametrize("scheme", FRACTION_SCHEMES)
@pytest.mark.parametrize("fraction", [0.35, 0.5, 0.75])
def test_fractions_realise_the_targets_on_calibration_and_the_budget_on_held_out(scheme, fraction):
    n = 4000
    logits, labels = synthetic(n, seed=10)
    cal = calibrate_fractions(logits, labels, COSTS, Budget("macs_fraction", fraction), scheme=scheme,
                              reference_cost=REF)
    q = np.array(cal.target_fractions)
    # within one sample of the target at every exit, on the calibration set
    assert np.abs(np.array(cal.exit_fractions) - q).max() <= 1.0 / n + 1e-12
    # and the number that has left by each exit is the rounded cumulative target
    assert np.abs(n * np.cumsum(cal.exit_fractions) - n * np.cumsum(q)).max() <= 0.5 + 1e-9
    assert cal.mean_cost == pytest.approx(fraction * COSTS[-1], abs=COSTS[-1] / n)
    assert cal.thresholds[-1] == -math.inf and cal.policy == "fractions"
    # the same thresholds on fresh samples of the same distribution: mean cost within 2 % of full cost
    held_logits, held_labels = synthetic(20000, seed=11)
    sim = simulate(exit_scores(held_logits, "max_softmax"), held_logits.argmax(-1), held_labels,
                   cal.thresholds, COSTS)
    assert abs(sim.mean_cost - fraction * COSTS[-1]) <= 0.02 * COSTS[-1]


def test_fractions_with_tied_scores_report_the_achieved_fractions():
    logits, labels = synthetic(100, seed=4)
    conf = np.full(logits.shape[:2], 0.7, dtype=np.float32)  # every sample ties at every exit
    with pytest.warns(CalibrationWarning, match="tied scores"):
        cal = calibrate_fractions(logits, labels, COSTS, Budget("macs_fraction", 0.5), kind="confidence",
                                  confidences=conf, reference_cost=REF)
    assert cal.exit_fractions == [1.0, 0.0, 0.0, 0.0]  # >= lets the whole tie leave at exit 0
    assert cal.target_fractions[0] < 0.5
    assert any("tied" in w for w in cal.warnings)


def test_fractions_on_a_tiny_calibration_set_warn_and_record():
    logits, labels = synthetic(3, seed=5)
    with pytest.warns(CalibrationWarning):
        cal = calibrate_fractions(logits, labels, COSTS, Budget("macs_fraction", 0.5), reference_cost=REF)
    assert any("3 samples for 4 exits" in w for w in cal.warnings)
    assert any("rounds to no sample" in w for w in cal.warnings)
    assert sum(cal.exit_fractions) == pytest.approx(1.0)


def test_fractions_leave_an_exit_unused_when_its_share_is_zero():
    logits, labels = synthetic(200, seed=6)
    costs = np.array([1.0, 1.0, 1.0, 1.0])  # a full-cost budget: everything can go to the final exit
    cal = calibrate_fractions(logits, labels, costs, Budget("macs_fraction", 1.0), reference_cost=1.0)
    assert cal.exit_fractions == [0.0, 0.0, 0.0, 1.0]
    assert cal.thresholds[:3] == [math.inf] * 3
    assert math.isnan(cal.exited_accuracy[0])


# ------------------------------------------------------------------------------------------------ search


@pytest.mark.parametrize("policy", ["fractions", "search"])
def test_outputs_scored_once_calibrate_as_the_logits_do(policy):
    """A sweep scores its outputs once (score_outputs) and passes them as the logits: the same calibration, field for
    field; scored for another kind or temperatures, or with other labels, they are refused."""
    logits, labels = synthetic(500, seed=3)
    temps = [1.5, 1.2, 1.0, 0.9]
    scored = score_outputs(logits, labels, "margin", temperatures=temps)
    for fraction in (0.4, 0.7):
        budget = Budget("macs_fraction", fraction)
        want = calibrate(logits, labels, COSTS, budget, reference_cost=REF, policy=policy, kind="margin",
                         temperatures=temps)
        got = calibrate(scored, labels, COSTS, budget, reference_cost=REF, policy=policy, kind="margin",
                        temperatures=temps)
        assert got == want
    with pytest.raises(ConfigError, match="another score"):
        calibrate(scored, labels, COSTS, budget, reference_cost=REF, policy=policy, temperatures=temps)
    with pytest.raises(ConfigError, match="another score"):
        calibrate(scored, labels, COSTS, budget, reference_cost=REF, policy=policy, kind="margin")
    with pytest.raises(ConfigError, match="labels differ"):
        calibrate(scored, (labels + 1) % 10, COSTS, budget, reference_cost=REF, policy=policy, kind="margin",
                  temperatures=temps)


def test_search_finds_the_designed_exits():
    logits, labels, kind, costs = designed()
    budget_cost = (1 + 2 + 4) / 3
    cal = calibrate_search(logits, labels, costs, Budget("macs", budget_cost), reference_cost=4.0)
    sim = simulate(exit_scores(logits, "max_softmax"), logits.argmax(-1), labels, cal.thresholds, costs)
    assert cal.accuracy == 1.0
    assert sim.exit_index.tolist() == kind.tolist()
    assert cal.mean_cost <= budget_cost + 1e-12 and cal.budget_met


def test_search_trades_accuracy_for_cost_when_the_budget_is_tight():
    logits, labels, kind, costs = designed()
    # 100 cost units for 60 samples: A at exit 0 (20) and B at exit 1 (40) leave 40 for the 20 C,
    # which are wrong at exits 0 and 1 alike. A wrong C is cheapest at exit 0, and every 3 C sent
    # there instead of exit 1 pay for one C answered (right) at the final exit: 20 + 3x <= 40, so
    # 6 C reach the final exit and the best accuracy is (20 + 20 + 6) / 60.
    cal = calibrate_search(logits, labels, costs, Budget("macs", 100 / 60), reference_cost=4.0)
    assert cal.accuracy == pytest.approx(46 / 60)
    assert cal.mean_cost <= 100 / 60 + 1e-12
    assert cal.exit_fractions == pytest.approx([34 / 60, 20 / 60, 6 / 60])


def brute_force(scores, preds, labels, costs, limit):
    """Best accuracy over every pair of distinct thresholds of a 3-exit problem."""
    best = 0.0
    grids = [np.concatenate((np.unique(scores[k]), [np.inf])) for k in range(2)]
    for t0, t1 in itertools.product(*grids):
        sim = simulate(scores, preds, labels, [t0, t1, -np.inf], costs)
        if sim.mean_cost <= limit + 1e-12:
            best = max(best, sim.accuracy)
    return best


@pytest.mark.parametrize("seed", range(4))
def test_search_is_close_to_exhaustive_on_small_problems(seed):
    n = 60
    logits, labels = synthetic(n, seed=seed, n_exits=3, n_classes=4)
    logits += np.random.default_rng(seed).normal(size=logits.shape).astype(np.float32)  # make it harder
    costs = np.array([1.0, 2.0, 4.0])
    limit = 0.55 * costs[-1]
    cal = calibrate_search(logits, labels, costs, Budget("macs_fraction", 0.55), reference_cost=4.0)
    optimum = brute_force(exit_scores(logits, "max_softmax"), logits.argmax(-1), labels, costs, limit)
    assert cal.mean_cost <= limit + 1e-12
    assert cal.accuracy >= optimum - 2.0 / n  # a local search: at most two samples short here


@pytest.mark.parametrize("fraction", [0.3, 0.5, 0.7, 0.9])
def test_search_meets_the_budget_and_beats_fractions(fraction):
    logits, labels = synthetic(2000, seed=7)
    budget = Budget("macs_fraction", fraction)
    cal = calibrate_search(logits, labels, COSTS, budget, reference_cost=REF)
    assert cal.budget_met and cal.mean_cost <= fraction * COSTS[-1] * (1 + 1e-12)
    frac = calibrate_fractions(logits, labels, COSTS, budget, reference_cost=REF)
    if frac.budget_met:  # search polishes the fractions thresholds among its starting points
        assert cal.accuracy >= frac.accuracy
    again = calibrate_search(logits, labels, COSTS, budget, reference_cost=REF)
    assert again.thresholds == cal.thresholds  # deterministic


def test_search_holds_the_budget_on_held_out_data():
    logits, labels = synthetic(5000, seed=12)
    cal = calibrate_search(logits, labels, COSTS, Budget("macs_fraction", 0.5), reference_cost=REF)
    held_logits, held_labels = synthetic(20000, seed=13)
    sim = simulate(exit_scores(held_logits, "max_softmax"), held_logits.argmax(-1), held_labels,
                   cal.thresholds, COSTS)
    assert abs(sim.mean_cost - 0.5 * COSTS[-1]) <= 0.02 * COSTS[-1]
    assert abs(sim.accuracy - cal.accuracy) <= 0.03


def test_search_above_the_full_cost_maximises_accuracy_alone():
    logits, labels, kind, costs = designed()
    # make the final exit wrong on a few type-A samples: exiting them early is strictly better
    logits[2, :5, :] = 0.0
    logits[2, np.arange(5), (labels[:5] + 1) % 3] = 3.0
    cal = calibrate_search(logits, labels, costs, Budget("macs_fraction", 1.5), reference_cost=4.0)
    assert cal.policy_params["constrained"] is False
    assert cal.accuracy == 1.0 > (logits[2].argmax(-1) == labels).mean()
    assert cal.budget_met


# ------------------------------------------------------------------------------------------------ fixed, gater


@pytest.mark.parametrize("policy", ["fixed", "gater"])
def test_constant_threshold_policies(policy):
    logits, labels = synthetic(6, seed=8, n_exits=3)
    conf = np.array([[0.5, 0.49, 0.9, 0.1, 0.0, 1.0],
                     [0.0, 0.6, 0.0, 0.2, 0.5, 0.0],
                     [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    fn = calibrate_fixed if policy == "fixed" else calibrate_gater
    cal = fn(logits, labels, [1.0, 2.0, 3.0], Budget("macs_fraction", 0.5), confidences=conf, reference_cost=3.0)
    assert cal.thresholds == [0.5, 0.5, -math.inf]
    assert cal.exit_fractions == pytest.approx([3 / 6, 2 / 6, 1 / 6])  # h >= 0.5 leaves (papers/002 Alg. 1)
    assert cal.mean_cost == pytest.approx((3 * 1 + 2 * 2 + 3) / 6)
    assert cal.budget_met is False  # a given budget is reported, not enforced
    assert cal.score_kind == ("confidence" if policy == "fixed" else "gater")


def test_fixed_takes_another_threshold_and_no_budget():
    logits, labels = synthetic(4, seed=9, n_exits=2)
    conf = np.array([[0.3, 0.8, 0.2, 0.25], [0, 0, 0, 0]], dtype=np.float32)
    cal = calibrate_fixed(logits, labels, [1.0, 2.0], confidences=conf, threshold=0.25, reference_cost=2.0)
    assert cal.exit_fractions == [0.75, 0.25] and cal.budget is None and cal.budget_met is None


# ------------------------------------------------------------------------------------------------ edge cases


def test_budget_below_the_first_exit_names_the_minimum():
    logits, labels = synthetic(20, seed=0)
    with pytest.raises(BudgetError, match=r">= 1 macs.*20.0% of the unsplit model") as err:
        calibrate_search(logits, labels, COSTS, Budget("macs_fraction", 0.15), reference_cost=5.0)
    assert err.value.hint
    with pytest.raises(BudgetError, match="below the cheapest"):
        calibrate_fractions(logits, labels, COSTS, Budget("macs", 0.5), reference_cost=REF)


@pytest.mark.parametrize("policy", ["search", "fractions"])
def test_bad_inputs_raise_clear_errors(policy):
    logits, labels = synthetic(20, seed=0)
    budget = Budget("macs_fraction", 0.5)
    with pytest.raises(DatasetError, match="empty"):
        calibrate(logits[:, :0], labels[:0], COSTS, budget, policy=policy, reference_cost=REF)
    bad = logits.copy()
    bad[1, 3, 2] = np.nan
    with pytest.raises(ShapeError, match=r"NaN.*\[1, 3, 2\]"):
        calibrate(bad, labels, COSTS, budget, policy=policy, reference_cost=REF)
    with pytest.raises(ShapeError, match="labels do not match"):
        calibrate(logits, labels[:-1], COSTS, budget, policy=policy, reference_cost=REF)
    with pytest.raises(ShapeError, match="one cumulative cost per exit"):
        calibrate(logits, labels, COSTS[:-1], budget, policy=policy, reference_cost=REF)
    with pytest.raises(ConfigError, match="non-decreasing"):
        calibrate(logits, labels, COSTS[::-1], budget, policy=policy, reference_cost=REF)
    with pytest.raises(ShapeError, match="3-d"):
        calibrate(logits[0], labels, COSTS, budget, policy=policy, reference_cost=REF)
    with pytest.raises(DatasetError, match="outside the classes"):
        calibrate(logits, labels + 10, COSTS, budget, policy=policy, reference_cost=REF)
    with pytest.raises(ConfigError, match="needs a budget"):
        calibrate(logits, labels, COSTS, None, policy=policy, reference_cost=REF)


def test_millisecond_budgets_use_the_latency_table():
    logits, labels = synthetic(500, seed=3)
    budget = Budget("ms", 5.0, target="jetson")
    with pytest.raises(BudgetError, match="latency table"):
        calibrate_search(logits, labels, COSTS, budget, reference_cost=7.5)
    with pytest.raises(BudgetError, match="another target"):
        calibrate_search(logits, labels, COSTS, budget, latency_ms=[2, 4, 6, 8], latency_target="cpu",
                         reference_cost=7.5)
    # the reference of an ms budget is the unsplit model's measured ms, not its MACs
    with pytest.raises(ConfigError, match="different units"):
        calibrate_search(logits, labels, COSTS, budget, latency_ms=[2.0, 4.0, 6.0, 8.0], latency_target="jetson",
                         reference_cost=56e6)
    cal = calibrate_search(logits, labels, COSTS, budget, latency_ms=[2.0, 4.0, 6.0, 8.0], latency_target="jetson",
                           reference_cost=7.5)
    assert cal.cost_unit == "ms" and cal.costs == [2.0, 4.0, 6.0, 8.0] and cal.reference_cost == 7.5
    assert cal.mean_cost <= 5.0 and cal.budget_cost == 5.0
    assert cal.cost_fraction == pytest.approx(cal.mean_cost / 7.5)


def test_unknown_policy():
    logits, labels = synthetic(10, seed=0)
    with pytest.raises(ConfigError, match="unknown calibration policy"):
        calibrate(logits, labels, COSTS, Budget("macs_fraction", 0.5), policy="greedy", reference_cost=REF)


# ------------------------------------------------------------------------------------------------ budgets, recipes


def test_budget_presets_load():
    names = list_presets("budgets")
    assert {"macs30", "macs50", "macs70", "jetson-5ms"} <= set(names)
    assert load_budget_preset("macs50") == Budget("macs_fraction", 0.5)
    assert load_budget_preset("macs30").value == pytest.approx(0.3)
    assert load_budget_preset("jetson-5ms") == Budget("ms", 5.0, "jetson")
    for name in names:
        assert isinstance(load_budget_preset(name), Budget)


def test_budget_preset_errors(tmp_path):
    with pytest.raises(ConfigError, match="macs50"):  # the message lists what exists
        load_budget_preset("macs55")
    bad = tmp_path / "bad.toml"
    bad.write_text('kind = "flops"\nvalue = 0.5\n')
    with pytest.raises(ConfigError, match="bad budget preset bad.toml: unknown budget kind"):
        load_budget_preset(bad)
    bad.write_text('kind = "macs"\nvalue = 5\nunit = "G"\n')
    with pytest.raises(ConfigError, match="kind, value"):
        load_budget_preset(bad)
    bad.write_text("kind = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_budget_preset(bad)
    good = tmp_path / "mine.toml"
    good.write_text('kind = "macs"\nvalue = 1.5e6\n')
    assert load_budget_preset(good) == Budget("macs", 1.5e6)
    for kind, value in [("macs", 0), ("macs", -1), ("ms", math.nan), ("watts", 1.0)]:
        with pytest.raises(ConfigError):
            Budget(kind, value)


def test_presets_folder_can_be_moved(tmp_path, monkeypatch):
    (tmp_path / "budgets").mkdir()
    (tmp_path / "budgets" / "tiny.toml").write_text('kind = "macs_fraction"\nvalue = 0.25\n')
    monkeypatch.setenv("EDGEEXIT_CALIBRATION_DIR", str(tmp_path))
    assert list_presets("budgets") == ["tiny"]
    assert load_budget_preset("tiny") == Budget("macs_fraction", 0.25)
    with pytest.raises(ConfigError, match="unknown budget preset"):
        load_budget_preset("macs50")


def test_recipes_load_and_pick_samples():
    default, quick = load_recipe("default"), load_recipe("quick")
    assert default == Recipe("val", None, 0)
    assert quick.split == "val" and quick.samples == 2000
    assert default.indices(7).tolist() == list(range(7))
    picked = quick.indices(10000)
    assert len(picked) == 2000 and len(np.unique(picked)) == 2000 and (np.diff(picked) > 0).all()
    assert picked.tolist() == quick.indices(10000).tolist()
    with pytest.raises(DatasetError, match="more samples"):
        quick.indices(500)
    assert Recipe.from_dict(quick.to_dict()) == quick
    with pytest.raises(ConfigError, match="unknown recipe preset"):
        load_recipe("slow")


# ------------------------------------------------------------------------------------------------ JSON, curves


@pytest.mark.parametrize("policy", ["fractions", "search"])
def test_calibration_json_round_trip(policy):
    logits, labels = synthetic(300, seed=14)
    cal = calibrate(logits, labels, COSTS, Budget("macs_fraction", 0.4, target="cpu"), policy=policy,
                    reference_cost=3.8)
    data = json.loads(json.dumps(cal.to_dict(), allow_nan=False))
    # the budget as the user gave it, its resolved value in cost_unit, and what fractions divide by
    assert data["budget"] == {"kind": "macs_fraction", "value": 0.4, "target": "cpu"}
    assert data["budget_cost"] == pytest.approx(0.4 * 3.8) and data["reference_cost"] == 3.8
    back = Calibration.from_dict(data)
    assert back.thresholds == cal.thresholds and back.thresholds[-1] == -math.inf
    assert back.budget == cal.budget and back.reference_cost == 3.8
    assert back.to_dict() == cal.to_dict()
    with pytest.raises(ConfigError, match="does not match its schema.*extra: Extra inputs are not permitted"):
        Calibration.from_dict({**cal.to_dict(), "extra": 1})
    with pytest.raises(ConfigError, match="reference_cost: Field required"):  # a calibration.json from before it
        Calibration.from_dict({k: v for k, v in cal.to_dict().items() if k != "reference_cost"})


def test_curves_and_plot(tmp_path):
    logits, labels = synthetic(600, seed=15)
    anytime = anytime_curve(logits, labels, COSTS, reference_cost=REF)
    assert anytime["accuracy"] == pytest.approx((logits.argmax(-1) == labels).mean(axis=1).tolist())
    assert anytime["cost_fraction"][-1] == 1.0
    curve = budget_curve(logits, labels, COSTS, policy="search", n_points=5, reference_cost=REF)
    assert len(curve["accuracy"]) == 5
    assert curve["budget_fraction"][0] == pytest.approx(COSTS[0] / COSTS[-1])
    assert all(c <= f + 1e-9 for c, f in zip(curve["cost_fraction"], curve["budget_fraction"]))
    assert curve["accuracy"][-1] >= anytime["accuracy"][-1]  # the full budget allows the final exit
    json.dumps(curve, allow_nan=False)
    chosen = calibrate_search(logits, labels, COSTS, Budget("macs_fraction", 0.5), reference_cost=REF)
    path = plot_curves(tmp_path / "curves.png", anytime=anytime, budgeted=curve, operating_point=chosen,
                       reference_cost=REF)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    with pytest.raises(ConfigError, match="follows a budget"):
        budget_curve(logits, labels, COSTS, policy="fixed", reference_cost=REF)


# ------------------------------------------------------------------------------------------------ the unsplit model

# The last exit carries every head: 6 % over the unsplit model's 100 (MobileNetV3-Small at 32 px).
HEADED = np.array([30.0, 55.0, 80.0, 106.0])
UNSPLIT = 100.0


def test_a_fraction_budget_is_a_fraction_of_the_unsplit_model():
    cost_vec, limit = Budget("macs_fraction", 0.5).resolve(HEADED, reference_cost=UNSPLIT)
    assert limit == 0.5 * UNSPLIT != 0.5 * HEADED[-1] and cost_vec.tolist() == HEADED.tolist()
    assert Budget("macs", 60.0).resolve(HEADED, reference_cost=UNSPLIT)[1] == 60.0
    assert Budget("ms", 4.0).resolve(HEADED, [1.0, 2.0, 3.0, 5.3], reference_cost=5.0)[1] == 4.0


@pytest.mark.parametrize("policy", ["search", "fractions"])
def test_calibration_fractions_divide_by_the_unsplit_model(policy):
    logits, labels = synthetic(1000, seed=16)
    cal = calibrate(logits, labels, HEADED, Budget("macs_fraction", 0.5), policy=policy, reference_cost=UNSPLIT)
    assert cal.budget_cost == 0.5 * UNSPLIT and cal.reference_cost == UNSPLIT
    assert cal.mean_cost == pytest.approx(0.5 * UNSPLIT, abs=HEADED[-1] / len(labels))  # not 0.5 x 106
    assert cal.cost_fraction == pytest.approx(cal.mean_cost / UNSPLIT)
    assert cal.cost_fraction != pytest.approx(cal.mean_cost / HEADED[-1])
    # "the whole model" does not afford answering everything at the last exit, which costs 6 % more
    whole = calibrate(logits, labels, HEADED, Budget("macs_fraction", 1.0), policy=policy, reference_cost=UNSPLIT)
    assert whole.budget_cost == UNSPLIT and whole.exit_fractions[-1] < 1.0
    assert whole.mean_cost <= UNSPLIT + HEADED[-1] / len(labels)  # fractions: within one sample of the target


@pytest.mark.parametrize("policy", ["fixed", "gater"])
def test_constant_policies_report_fractions_of_the_unsplit_model(policy):
    logits, labels = synthetic(50, seed=17)
    conf = np.random.default_rng(17).uniform(size=logits.shape[:2]).astype(np.float32)
    cal = calibrate(logits, labels, HEADED, Budget("macs_fraction", 0.5), policy=policy, confidences=conf,
                    reference_cost=UNSPLIT)
    assert cal.budget_cost == 0.5 * UNSPLIT and cal.cost_fraction == pytest.approx(cal.mean_cost / UNSPLIT)
    no_budget = calibrate(logits, labels, HEADED, policy=policy, confidences=conf, reference_cost=UNSPLIT)
    assert no_budget.cost_fraction == pytest.approx(no_budget.mean_cost / UNSPLIT)


def test_curves_use_the_unsplit_model(tmp_path):
    logits, labels = synthetic(600, seed=18)
    anytime = anytime_curve(logits, labels, HEADED, reference_cost=UNSPLIT)
    assert anytime["cost_fraction"] == pytest.approx((HEADED / UNSPLIT).tolist())  # the last exit is 1.06
    assert anytime["reference_cost"] == UNSPLIT
    curve = budget_curve(logits, labels, HEADED, policy="fractions", n_points=4, reference_cost=UNSPLIT)
    assert curve["budget_fraction"] == pytest.approx(np.linspace(0.30, 1.06, 4).tolist())  # costs[0 and -1] / ref
    assert curve["cost_fraction"] == pytest.approx([m / UNSPLIT for m in curve["mean_cost"]])
    assert all(c <= f + 1e-9 for c, f in zip(curve["cost_fraction"], curve["budget_fraction"]))
    assert curve["reference_cost"] == UNSPLIT
    chosen = calibrate_fractions(logits, labels, HEADED, Budget("macs_fraction", 0.5), reference_cost=UNSPLIT)
    plot_curves(tmp_path / "curves.png", anytime=anytime, budgeted=curve, operating_point=chosen,
                reference_cost=UNSPLIT)
    with pytest.raises(ConfigError, match="another unsplit-model cost"):
        plot_curves(tmp_path / "x.png", anytime=anytime, operating_point=chosen, reference_cost=HEADED[-1])
    in_ms = calibrate_fractions(logits, labels, HEADED, Budget("ms", 5.0), latency_ms=[2.0, 4.0, 6.0, 8.0],
                                reference_cost=7.5)
    with pytest.raises(ConfigError, match="different cost units"):
        plot_curves(tmp_path / "x.png", anytime=anytime, operating_point=in_ms, reference_cost=UNSPLIT)


def test_reference_cost_is_required():
    logits, labels = synthetic(40, seed=19)
    conf = np.full(logits.shape[:2], 0.5, dtype=np.float32)
    half = Budget("macs_fraction", 0.5)
    no_reference = [
        lambda: half.resolve(HEADED),
        lambda: calibrate(logits, labels, HEADED, half),
        lambda: calibrate_search(logits, labels, HEADED, half),
        lambda: calibrate_fractions(logits, labels, HEADED, half),
        lambda: calibrate_fixed(logits, labels, HEADED, half, confidences=conf),
        lambda: calibrate_gater(logits, labels, HEADED, half, confidences=conf),
        lambda: anytime_curve(logits, labels, HEADED),
        lambda: budget_curve(logits, labels, HEADED),
        lambda: plot_curves("never.png", anytime={"cost_unit": "macs", "cost": [1.0], "accuracy": [1.0]}),
    ]
    for call in no_reference:
        with pytest.raises(TypeError, match="reference_cost"):
            call()
    for bad in (None, 0.0, -1.0, math.nan, math.inf, True, "100"):
        with pytest.raises(ConfigError, match="reference_cost"):
            half.resolve(HEADED, reference_cost=bad)
        with pytest.raises(ConfigError, match="reference_cost"):
            calibrate(logits, labels, HEADED, None, policy="fixed", confidences=conf, reference_cost=bad)
    with pytest.raises(ConfigError, match="different units"):  # MACs given where ms were meant, or the reverse
        anytime_curve(logits, labels, HEADED, reference_cost=1e-3)
