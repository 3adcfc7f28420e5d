"""Accuracy / cost curves (MSDNet's two modes, used by papers/003) as JSON-safe dicts and a PNG.

- anytime: every exit alone answers every sample; accuracy vs that exit's cumulative cost.
- budgeted batch: one policy calibrated at a sweep of budgets; accuracy vs mean cost per sample.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgeexit import jsonio
from edgeexit.calibrate.budget import Budget
from edgeexit.calibrate.calibration import Calibration
from edgeexit.calibrate.inputs import check_costs, check_outputs
from edgeexit.calibrate.policies import calibrate
from edgeexit.errors import ConfigError

BUDGETED_POLICIES = ("search", "fractions")  # the policies whose thresholds follow a budget


def anytime_curve(logits, labels, costs, *, cost_unit: str = "macs") -> dict:
    """Accuracy of each exit alone on all samples, with its cumulative cost (`costs [E]`, in `cost_unit`)."""
    logits, labels = check_outputs(logits, labels)
    cost_vec = check_costs(costs, logits.shape[0])
    accuracy = (logits.argmax(axis=-1) == labels).mean(axis=1)
    return {
        "mode": "anytime",
        "cost_unit": cost_unit,
        "exit": list(range(logits.shape[0])),
        "cost": cost_vec.tolist(),
        "cost_fraction": (cost_vec / cost_vec[-1]).tolist(),
        "accuracy": accuracy.tolist(),
    }


def budget_curve(logits, labels, costs, *, policy: str = "search", fractions=None, n_points: int = 20,
                 cost_unit: str = "macs", **options) -> dict:
    """Calibrate `policy` at each budget in `fractions` (of the full cost costs[-1]) and record the outcome.

    `costs` is the cost vector to budget over (cumulative MACs, or a measured latency table, named by
    `cost_unit`); `options` go to the policy (kind, confidences, scheme...). By default the sweep is
    `n_points` budgets evenly spaced from the cheapest possible (costs[0] / costs[-1]) to 1.
    CalibrationWarnings from the points are collected, deduplicated, under "warnings".
    """
    if policy not in BUDGETED_POLICIES:
        raise ConfigError("a budgeted curve needs a policy that follows a budget", got=repr(policy),
                          expected=" | ".join(BUDGETED_POLICIES),
                          hint="fixed and gater thresholds give one operating point, not a curve")
    logits, labels = check_outputs(logits, labels)
    cost_vec = check_costs(costs, logits.shape[0])
    if fractions is None:
        fractions = np.linspace(cost_vec[0] / cost_vec[-1], 1.0, n_points)
    points: list[Calibration] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for fraction in fractions:
            points.append(calibrate(logits, labels, cost_vec, Budget("macs_fraction", float(fraction)),
                                    policy=policy, **options))
    return jsonio.to_jsonable({
        "mode": "budgeted",
        "policy": policy,
        "score_kind": points[0].score_kind,
        "cost_unit": cost_unit,
        "budget_fraction": [float(f) for f in fractions],
        "mean_cost": [p.mean_cost for p in points],
        "cost_fraction": [p.cost_fraction for p in points],
        "accuracy": [p.accuracy for p in points],
        "exit_fractions": [p.exit_fractions for p in points],
        "thresholds": [p.thresholds for p in points],
        "warnings": sorted({str(w.message) for w in caught}),
    })


def plot_curves(path: str | Path, *, anytime: dict | None = None, budgeted: dict | None = None,
                operating_point: Calibration | list[Calibration] | None = None, title: str | None = None) -> Path:
    """Save accuracy vs % of full cost as a PNG at `path`, marking the chosen operating point(s)."""
    # Figure + Agg canvas directly: no pyplot, so no global backend state and no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if anytime is None and budgeted is None and operating_point is None:
        raise ConfigError("nothing to plot", expected="anytime, budgeted or operating_point")
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    points = [] if operating_point is None else list(operating_point) if isinstance(operating_point, list) else [operating_point]
    unit = next((c["cost_unit"] for c in (anytime, budgeted) if c), None) or (points[0].cost_unit if points else "macs")
    if anytime:
        x = 100 * np.asarray(anytime["cost_fraction"])
        ax.plot(x, 100 * np.asarray(anytime["accuracy"]), "s--", color="tab:gray", label="anytime (each exit alone)")
        for k, (xk, yk) in enumerate(zip(x, 100 * np.asarray(anytime["accuracy"]))):
            ax.annotate(f"exit {k}", (xk, yk), textcoords="offset points", xytext=(4, -10), fontsize=7)
    if budgeted:
        label = f"budgeted batch ({budgeted['policy']}, {budgeted['score_kind']})"
        ax.plot(100 * np.asarray(budgeted["cost_fraction"]), 100 * np.asarray(budgeted["accuracy"]), "o-",
                color="tab:blue", markersize=3, label=label)
    for i, point in enumerate(points):
        ax.plot([100 * point.cost_fraction], [100 * point.accuracy], "*", color=f"C{3 + i}", markersize=14,
                label=f"chosen: {point.policy}, {100 * point.cost_fraction:.1f} % cost, {100 * point.accuracy:.2f} %")
        if point.budget_cost is not None:
            ax.axvline(100 * point.budget_cost / point.costs[-1], color=f"C{3 + i}", linestyle=":", linewidth=1,
                       label=f"budget {100 * point.budget_cost / point.costs[-1]:.0f} %")
    ax.set_xlabel(f"mean cost, % of the full model ({unit})")
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
