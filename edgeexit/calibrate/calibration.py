"""`Calibration`: the thresholds a policy chose and what they achieve on the calibration set.

This is what `calibration.json` in a bundle holds: the budget as the user gave it (`budget`, e.g.
{"kind": "macs_fraction", "value": 0.5}), its resolved value (`budget_cost`, in `cost_unit`), and
`reference_cost`, the unsplit original model's cost that every fraction divides by.

Thresholds may be +inf (nobody exits there) and the final one is always -inf; JSON has no
infinities, so `to_dict()` writes them (and NaN) as the strings "inf" / "-inf" / "nan", as
`edgeexit.jsonio` does, and `from_dict()` reads them back.

`CalibrationFile` is the schema of calibration.json, and `read_calibration_file` / `write_calibration_file` are
its only reader and writer: strict types (no string turned into a number, no bool taken for one), every
threshold +inf, -inf or a finite value the score kind can take, so that a hand-edited file (a threshold "abc",
null, "0.5", true or -5) is refused before it reaches a bundle.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError, model_validator

from edgeexit import jsonio
from edgeexit.calibrate.budget import Budget
from edgeexit.calibrate.inputs import check_reference
from edgeexit.calibrate.simulate import simulate
from edgeexit.errors import ConfigError

POLICY_NAMES = ("fractions", "fixed", "search", "gater")
# the values each score kind can take (a threshold outside them is meaningless: everyone or no one exits)
SCORE_RANGES = {"max_softmax": (0.0, 1.0), "margin": (0.0, 1.0), "confidence": (0.0, 1.0), "gater": (0.0, 1.0),
                "neg_entropy": (-math.inf, 0.0)}


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
    def from_dict(cls, data: Any) -> "Calibration":
        """Rebuild a Calibration from `to_dict()`'s output (e.g. read back from calibration.json), checked against
        `CalibrationFile`; ConfigError names the first bad fields."""
        if not isinstance(data, dict):
            raise ConfigError("a calibration must be a JSON object", got=type(data).__name__,
                              expected="the object `edgeexit calibrate` writes")
        try:
            CalibrationFile.model_validate(data)
        except ValidationError as exc:
            raise ConfigError("calibration does not match its schema", got=_first_errors(exc),
                              expected="what `edgeexit calibrate` writes: thresholds finite in the score's range, "
                                       "\"inf\" or \"-inf\" (numbers, not strings), the last \"-inf\"",
                              hint="run `edgeexit calibrate` again rather than editing calibration.json") from None
        values = {name: jsonio.from_jsonable(value) for name, value in data.items()}
        if values.get("budget") is not None:
            values["budget"] = Budget.from_dict(data["budget"])
        return cls(**values)


# ---------------------------------------------------------------------------------------------------
# calibration.json: its schema, its only reader and writer

Number = Union[StrictInt, StrictFloat]  # never a bool, never a string holding a number
JsonFloat = Union[Number, Literal["inf", "-inf", "nan"]]  # jsonio's spelling of non-finite floats
Threshold = Union[Number, Literal["inf", "-inf"]]


def _value(x: Any) -> float:
    return float(x)  # "inf" / "-inf" / "nan" and numbers alike


class BudgetFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["macs_fraction", "macs", "ms"]
    value: Number
    target: Optional[StrictStr] = None


class CalibrationFile(BaseModel):
    """The schema of calibration.json (the fields of `Calibration`, as `to_dict()` writes them)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    policy: Literal["fractions", "fixed", "search", "gater"]
    score_kind: Literal["max_softmax", "margin", "neg_entropy", "confidence", "gater"]
    thresholds: list[Threshold]
    costs: list[Number]
    cost_unit: Literal["macs", "ms"]
    reference_cost: Number
    budget: Optional[BudgetFile]
    budget_cost: Optional[Number]
    budget_met: Optional[StrictBool]
    n_samples: StrictInt
    exit_fractions: list[Number]
    accuracy: Number
    mean_cost: Number
    cost_fraction: Number
    exit_accuracy: list[Number]
    exited_accuracy: list[JsonFloat]  # "nan" where no sample exited
    target_fractions: Optional[list[Number]] = None
    policy_params: dict[StrictStr, Union[JsonFloat, StrictStr, StrictBool, None]] = {}
    warnings: list[StrictStr] = []
    provenance: dict[StrictStr, Optional[StrictStr]] = {}
    temperatures: Optional[list[Number]] = None
    calibration_error: dict[StrictStr, list[JsonFloat]] = {}

    @model_validator(mode="after")
    def _consistent(self) -> "CalibrationFile":
        n = len(self.thresholds)
        if n < 1:
            raise ValueError("thresholds: at least one exit")
        for name in ("costs", "exit_fractions", "exit_accuracy", "exited_accuracy"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name}: {len(getattr(self, name))} values for {n} thresholds")
        low, high = SCORE_RANGES[self.score_kind]
        for k, t in enumerate(self.thresholds):
            value = _value(t)
            if math.isinf(value):
                continue  # +inf: nobody leaves at k; -inf: everybody that reaches k does
            if not low <= value <= high:
                raise ValueError(f"thresholds[{k}] = {value!r} is outside what {self.score_kind} takes, "
                                 f"[{low}, {high}] (or inf / -inf)")
        if _value(self.thresholds[-1]) != -math.inf:
            raise ValueError(f"thresholds[{n - 1}]: the final exit answers every sample left, so its threshold is \"-inf\"")
        if not all(math.isfinite(c) and c >= 0 for c in self.costs):
            raise ValueError(f"costs: finite and >= 0, got {self.costs}")
        if not (math.isfinite(self.reference_cost) and self.reference_cost > 0):
            raise ValueError(f"reference_cost: finite and > 0, got {self.reference_cost}")
        if self.temperatures is not None and (len(self.temperatures) != n or
                                              not all(math.isfinite(t) and t > 0 for t in self.temperatures)):
            raise ValueError(f"temperatures: {n} finite values > 0, got {self.temperatures}")
        if self.n_samples < 1:
            raise ValueError(f"n_samples: >= 1, got {self.n_samples}")
        return self


def _first_errors(exc: ValidationError, count: int = 3) -> str:
    """The first `count` bad fields, one line each: a union's alternatives (int | float | "inf") as one."""
    by_field: dict[str, tuple[list[str], Any]] = {}
    for e in exc.errors():
        # pydantic names each union member in the location (thresholds.0.int, thresholds.0.float...): drop those
        loc = [str(p) for p in e["loc"] if not (isinstance(p, str) and (p in _MEMBER_TAGS or "[" in p))]
        msgs, value = by_field.setdefault(".".join(loc) or "calibration", ([], e.get("input")))
        msgs.append(e["msg"].removeprefix("Input should be ").removeprefix("Value error, "))
    parts = []
    for where, (msgs, value) in list(by_field.items())[:count]:
        got = f" (got {value!r:.60})" if where != "calibration" and not isinstance(value, (dict, list)) else ""
        parts.append(f"{where}: {' or '.join(dict.fromkeys(msgs))}{got}")
    return "; ".join(parts)


_MEMBER_TAGS = ("int", "float", "str", "bool", "none")


def read_calibration_file(path: Path) -> Calibration:
    """calibration.json as a Calibration; ConfigError for a missing, non-JSON or off-schema file."""
    path = Path(path)
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError("calibration not found", got=str(path), expected="calibration.json",
                          hint="run `edgeexit calibrate` first") from None
    except (UnicodeDecodeError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{path} is not JSON", got=f"{type(err).__name__}: {str(err)[:120]}",
                          expected="the JSON `edgeexit calibrate` writes", hint="run `edgeexit calibrate` again") from None
    return Calibration.from_dict(data)


def write_calibration_file(path: Path, cal: Calibration) -> None:
    """Write `cal` atomically, after checking it against the schema it will be read with."""
    data = cal.to_dict()
    Calibration.from_dict(data)  # never write what read_calibration_file would refuse
    jsonio.write_json(path, data)


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
