"""Accuracy / cost curves (MSDNet's two modes, used by papers/003) as JSON-safe dicts and a PNG.

- anytime: every exit alone answers every sample; accuracy vs that exit's cumulative cost.
- budgeted batch: one policy calibrated at a sweep of budgets; accuracy vs mean cost per sample.

Every cost fraction here is a fraction of `reference_cost`, the unsplit original model's cost in the
curve's unit (its MACs, or its measured ms), never of the last exit's cumulative cost.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from edgeexit import jsonio
from edgeexit.calibrate.budget import Budget
from edgeexit.calibrate.calibration import Calibration
from edgeexit.calibrate.inputs import check_costs, check_outputs, check_reference
from edgeexit.calibrate.policies import calibrate, score_outputs
from edgeexit.errors import ConfigError

BUDGETED_POLICIES = ("search", "fractions")  # the policies whose thresholds follow a budget


def anytime_curve(logits, labels, costs, *, reference_cost: float, cost_unit: str = "macs") -> dict:
    """Accuracy of each exit alone on all samples, with its cumulative cost (`costs [E]`, in `cost_unit`)
    and that cost as a fraction of `reference_cost` (the unsplit model's cost, in `cost_unit`)."""
    logits, labels = check_outputs(logits, labels)
    cost_vec = check_costs(costs, logits.shape[0])
    reference = check_reference(reference_cost, cost_vec, unit=cost_unit)
    accuracy = (logits.argmax(axis=-1) == labels).mean(axis=1)
    return {
        "mode": "anytime",
        "cost_unit": cost_unit,
        "reference_cost": reference,
        "exit": list(range(logits.shape[0])),
        "cost": cost_vec.tolist(),
        "cost_fraction": (cost_vec / reference).tolist(),
        "accuracy": accuracy.tolist(),
    }


def budget_curve(logits, labels, costs, *, reference_cost: float, policy: str = "search", fractions=None,
                 n_points: int = 20, cost_unit: str = "macs", **options) -> dict:
    """Calibrate `policy` at each budget in `fractions` (of `reference_cost`) and record the outcome.

    `costs` is the cost vector to budget over (cumulative MACs, or a measured latency table, named by
    `cost_unit`) and `reference_cost` the unsplit model's cost in that unit; `options` go to the policy
    (kind, confidences, scheme...). By default the sweep is `n_points` budgets evenly spaced from the
    cheapest possible (costs[0] / reference_cost) to the last exit (costs[-1] / reference_cost).
    CalibrationWarnings from the points are collected, deduplicated, under "warnings".
    """
    if policy not in BUDGETED_POLICIES:
        raise ConfigError("a budgeted curve needs a policy that follows a budget", got=repr(policy),
                          expected=" | ".join(BUDGETED_POLICIES),
                          hint="fixed and gater thresholds give one operating point, not a curve")
    logits, labels = check_outputs(logits, labels)
    cost_vec = check_costs(costs, logits.shape[0])
    # every point reads the same scores: computed once (scoring is most of a fractions calibration's time)
    scored = score_outputs(logits, labels, options.get("kind", "max_softmax"), options.get("confidences"),
                           options.get("temperatures"))
    reference = check_reference(reference_cost, cost_vec, unit=cost_unit)
    if fractions is None:
        fractions = np.linspace(cost_vec[0] / reference, cost_vec[-1] / reference, n_points)
    points: list[Calibration] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for fraction in fractions:
            # value x reference over `cost_vec`: the same arithmetic whatever unit the costs are in
            points.append(calibrate(scored, labels, cost_vec, Budget("macs_fraction", float(fraction)),
                                    reference_cost=reference, policy=policy, **options))
    return jsonio.to_jsonable({
        "mode": "budgeted",
        "policy": policy,
        "score_kind": points[0].score_kind,
        "cost_unit": cost_unit,
        "reference_cost": reference,
        "budget_fraction": [float(f) for f in fractions],
        "mean_cost": [p.mean_cost for p in points],
        "cost_fraction": [p.cost_fraction for p in points],
        "accuracy": [p.accuracy for p in points],
        "exit_fractions": [p.exit_fractions for p in points],
        "thresholds": [p.thresholds for p in points],
        "warnings": sorted({str(w.message) for w in caught}),
    })


def _same_reference(reference: float, recorded: dict[str, float]) -> None:
    """Raise unless every input was computed against `reference` (the unsplit model's cost)."""
    for what, value in recorded.items():
        if not math.isclose(float(value), reference, rel_tol=1e-9):
            raise ConfigError(f"the {what} was computed against another unsplit-model cost", got=value,
                              expected=reference, hint="pass the same reference_cost to the curves, calibrate and "
                                                       "plot_curves")


def plot_curves(path: str | Path, *, reference_cost: float, anytime: dict | None = None, budgeted: dict | None = None,
                operating_point: Calibration | list[Calibration] | None = None, title: str | None = None) -> Path:
    """Save accuracy vs mean cost as a % of `reference_cost` (the unsplit model's cost, in the curves'
    unit) as a PNG at `path`, marking the chosen operating point(s). Every input must have been
    computed against the same reference and in the same unit (ConfigError otherwise)."""
    # Figure + Agg canvas directly: no pyplot, so no global backend state and no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if anytime is None and budgeted is None and operating_point is None:
        raise ConfigError("nothing to plot", expected="anytime, budgeted or operating_point")
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = [] if operating_point is None else list(operating_point) if isinstance(operating_point, list) else [operating_point]
    units = {c["cost_unit"] for c in (anytime, budgeted) if c} | {p.cost_unit for p in points}
    if len(units) != 1:
        raise ConfigError("the curves and operating points are in different cost units", got=sorted(units),
                          expected="all in macs or all in ms")
    unit = units.pop()
    recorded = {f"{name} curve": c["reference_cost"] for name, c in (("anytime", anytime), ("budgeted", budgeted))
                if c and "reference_cost" in c}
    recorded.update({f"operating point {i}": p.reference_cost for i, p in enumerate(points)})
    seen = anytime["cost"] if anytime else budgeted["mean_cost"] if budgeted else points[0].costs
    reference = check_reference(reference_cost, np.asarray(seen, dtype=np.float64), unit=unit)
    _same_reference(reference, recorded)
    if anytime:
        x = 100 * np.asarray(anytime["cost"]) / reference
        ax.plot(x, 100 * np.asarray(anytime["accuracy"]), "s--", color="tab:gray", label="anytime (each exit alone)")
        for k, (xk, yk) in enumerate(zip(x, 100 * np.asarray(anytime["accuracy"]))):
            ax.annotate(f"exit {k}", (xk, yk), textcoords="offset points", xytext=(4, -10), fontsize=7)
    if budgeted:
        label = f"budgeted batch ({budgeted['policy']}, {budgeted['score_kind']})"
        ax.plot(100 * np.asarray(budgeted["mean_cost"]) / reference, 100 * np.asarray(budgeted["accuracy"]), "o-",
                color="tab:blue", markersize=3, label=label)
    for i, point in enumerate(points):
        x = 100 * point.mean_cost / reference
        ax.plot([x], [100 * point.accuracy], "*", color=f"C{3 + i}", markersize=14,
                label=f"chosen: {point.policy}, {x:.1f} % cost, {100 * point.accuracy:.2f} %")
        if point.budget_cost is not None:
            ax.axvline(100 * point.budget_cost / reference, color=f"C{3 + i}", linestyle=":", linewidth=1,
                       label=f"budget {100 * point.budget_cost / reference:.0f} %")
    ax.set_xlabel(f"mean cost per sample, % of the unsplit model's {'MACs' if unit == 'macs' else unit}")
    ax.set_ylabel("top-1 accuracy, %")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
