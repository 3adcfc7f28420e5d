"""`Calibration`: the thresholds a policy chose and what they achieve on the calibration set.

This is what `calibration.json` in a bundle holds. Thresholds may be +inf (nobody exits there) and
the final one is always -inf; JSON has no infinities, so `to_dict()` writes them (and NaN) as the
strings "inf" / "-inf" / "nan", as `edgeexit.jsonio` does, and `from_dict()` reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from edgeexit import jsonio
from edgeexit.calibrate.budget import Budget
from edgeexit.calibrate.simulate import simulate
from edgeexit.errors import ConfigError


class CalibrationWarning(UserWarning):
    """The calibration set cannot realise what was asked exactly (too few samples, tied scores...)."""


@dataclass
class Calibration:
    policy: str  # fractions | fixed | search | gater
    score_kind: str  # one of SCORE_KINDS
    thresholds: list[float]  # [E]; exit at the first k with score_k >= thresholds[k]; last = -inf
    costs: list[float]  # [E] cumulative cost of answering at exit k, in `cost_unit`
    cost_unit: str  # "macs" or "ms"
    budget: Budget | None  # as given (None for policies that do not take one)
    budget_cost: float | None  # the budget as a mean cost per sample, in `cost_unit`
    budget_met: bool | None  # mean_cost <= budget_cost on the calibration set
    n_samples: int
    exit_fractions: list[float]  # [E] achieved on the calibration set: the expected fractions
    accuracy: float  # expected accuracy (on the calibration set)
    mean_cost: float  # expected mean cost per sample, in `cost_unit`
    cost_fraction: float  # mean_cost / costs[-1] (the full model)
    exit_accuracy: list[float]  # [E] accuracy of each exit alone on every calibration sample
    exited_accuracy: list[float]  # [E] accuracy among the samples answered at k; NaN where none
    target_fractions: list[float] | None = None  # what the fractions policy aimed for
    policy_params: dict = field(default_factory=dict)  # e.g. p, lambda, T
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """A JSON-safe dict (json.dumps(..., allow_nan=False) accepts it)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, Budget) else jsonio.to_jsonable(value)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "Calibration":
        """Rebuild a Calibration from `to_dict()`'s output (e.g. read back from calibration.json)."""
        names = [f.name for f in fields(cls)]
        unknown = set(data) - set(names)
        if unknown:
            raise ConfigError("unknown keys in a calibration", got=sorted(unknown), expected=names)
        values = {name: jsonio.from_jsonable(value) for name, value in data.items()}
        if values.get("budget") is not None:
            values["budget"] = Budget.from_dict(data["budget"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError("a calibration misses keys", got=str(exc), expected=names) from exc




def make_calibration(policy: str, kind: str, thresholds, scores: np.ndarray, preds: np.ndarray, labels: np.ndarray,
                     costs: np.ndarray, cost_unit: str, budget: Budget | None, budget_cost: float | None, *,
                     target_fractions=None, policy_params: dict | None = None,
                     warnings: list[str] | None = None) -> Calibration:
    """Replay `thresholds` (last forced to -inf) on the calibration set and record the outcome."""
    # float32, as the deployed graph computes the score: a threshold between two float32 values would make
    # calibration and run time disagree on the samples that sit exactly there.
    thresholds = [float(np.float32(t)) for t in thresholds]
    thresholds[-1] = float("-inf")
    sim = simulate(scores, preds, labels, thresholds, costs)
    met = None if budget_cost is None else bool(sim.mean_cost <= budget_cost * (1 + 1e-9))
    return Calibration(
        policy=policy, score_kind=kind, thresholds=thresholds,
        costs=[float(c) for c in costs], cost_unit=cost_unit,
        budget=budget, budget_cost=None if budget_cost is None else float(budget_cost), budget_met=met,
        n_samples=int(labels.shape[0]),
        exit_fractions=sim.exit_fractions.tolist(),
        accuracy=sim.accuracy, mean_cost=sim.mean_cost, cost_fraction=sim.mean_cost / float(costs[-1]),
        exit_accuracy=(preds == labels).mean(axis=1).tolist(),
        exited_accuracy=sim.exited_accuracy.tolist(),
        target_fractions=None if target_fractions is None else [float(q) for q in target_fractions],
        policy_params=dict(policy_params or {}),
        warnings=list(warnings or []),
    )
