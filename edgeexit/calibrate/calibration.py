"""`Calibration`: the thresholds a policy chose and what they achieve on the calibration set.

This is what `calibration.json` in a bundle holds: the budget as the user gave it (`budget`, e.g.
{"kind": "macs_fraction", "value": 0.5}), its resolved value (`budget_cost`, in `cost_unit`), and
`reference_cost`, the unsplit original model's cost that every fraction divides by.

Thresholds may be +inf (nobody exits there) and the final one is always -inf; JSON has no
infinities, so `to_dict()` writes them (and NaN) as the strings "inf" / "-inf" / "nan", as
`edgeexit.jsonio` does, and `from_dict()` reads them back.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np

from edgeexit import jsonio
from edgeexit.calibrate.budget import Budget
from edgeexit.calibrate.inputs import check_reference
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
    reference_cost: float  # the unsplit original model's cost per sample, in `cost_unit` (not costs[-1])
    budget: Budget | None  # as given (None for policies that do not take one)
    budget_cost: float | None  # the budget as a mean cost per sample, in `cost_unit`
    budget_met: bool | None  # mean_cost <= budget_cost on the calibration set
    n_samples: int
    exit_fractions: list[float]  # [E] achieved on the calibration set: the expected fractions
    accuracy: float  # expected accuracy (on the calibration set)
    mean_cost: float  # expected mean cost per sample, in `cost_unit`
    cost_fraction: float  # mean_cost / reference_cost (a fraction of the unsplit model)
    exit_accuracy: list[float]  # [E] accuracy of each exit alone on every calibration sample
    exited_accuracy: list[float]  # [E] accuracy among the samples answered at k; NaN where none
    target_fractions: list[float] | None = None  # what the fractions policy aimed for
    policy_params: dict = field(default_factory=dict)  # e.g. p, lambda, T
    warnings: list[str] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)  # sha256 of the checkpoint (and profile) it was calibrated on
    temperatures: list[float] | None = None  # [E] the score at exit k reads logits / T_k; None: not scaled
    # per exit, before (T = 1) and after temperature scaling: nll_before, nll_after, ece_before, ece_after
    calibration_error: dict = field(default_factory=dict)

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
                     reference_cost: float, target_fractions=None, policy_params: dict | None = None,
                     warnings: list[str] | None = None, temperatures=None) -> Calibration:
    """Replay `thresholds` (last forced to -inf) on the calibration set and record the outcome.

    `reference_cost` is the unsplit model's cost in `cost_unit`; `cost_fraction` = mean cost / it.
    """
    reference_cost = check_reference(reference_cost, np.asarray(costs, dtype=np.float64), unit=cost_unit)
    # float32, as the deployed graph computes the score: a threshold between two float32 values would make
    # calibration and run time disagree on the samples that sit exactly there.
    thresholds = [float(np.float32(t)) for t in thresholds]
    thresholds[-1] = float("-inf")
    sim = simulate(scores, preds, labels, thresholds, costs)
    met = None if budget_cost is None else bool(sim.mean_cost <= budget_cost * (1 + 1e-9))
    return Calibration(
        policy=policy, score_kind=kind, thresholds=thresholds,
        costs=[float(c) for c in costs], cost_unit=cost_unit, reference_cost=reference_cost,
        budget=budget, budget_cost=None if budget_cost is None else float(budget_cost), budget_met=met,
        n_samples=int(labels.shape[0]),
        exit_fractions=sim.exit_fractions.tolist(),
        accuracy=sim.accuracy, mean_cost=sim.mean_cost, cost_fraction=sim.mean_cost / reference_cost,
        exit_accuracy=(preds == labels).mean(axis=1).tolist(),
        exited_accuracy=sim.exited_accuracy.tolist(),
        target_fractions=None if target_fractions is None else [float(q) for q in target_fractions],
        policy_params=dict(policy_params or {}),
        warnings=list(warnings or []),
        temperatures=None if temperatures is None else [float(t) for t in temperatures],
    )
