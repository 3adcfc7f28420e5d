"""Compute budgets (MACs or measured milliseconds) and the presets in `calibration/budgets/*.toml`.

A budget bounds the *mean* cost per sample over the calibration set. It resolves to a per-exit
cumulative cost vector and a limit in the same units:

- `macs_fraction`: costs = cumulative MACs, limit = value x costs[-1] (the full model, all heads);
- `macs`: costs = cumulative MACs, limit = value;
- `ms`: costs = the target's measured cumulative latency to answer at each exit (from the
  profiler), limit = value. `target` names the device the table must come from.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, TypeVar

import numpy as np

from edgeexit import tomlfiles
from edgeexit.calibrate.inputs import check_costs
from edgeexit.errors import BudgetError, ConfigError

BUDGET_KINDS = ("macs_fraction", "macs", "ms")
ENV_VAR = "EDGEEXIT_CALIBRATION_DIR"
T = TypeVar("T")


@dataclass(frozen=True)
class Budget:
    """A bound on the mean cost per sample: `kind` in BUDGET_KINDS, `value` > 0, optional `target`."""

    kind: str
    value: float
    target: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in BUDGET_KINDS:
            raise ConfigError("unknown budget kind", got=repr(self.kind), expected=" | ".join(BUDGET_KINDS))
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value) \
                or self.value <= 0:
            raise ConfigError(f"a {self.kind} budget needs a positive finite value", got=repr(self.value),
                              hint="macs_fraction 0.5 = half the full model's MACs")
        if self.target is not None and not (isinstance(self.target, str) and self.target):
            raise ConfigError("a budget's target must be a target name", got=repr(self.target),
                              expected="e.g. 'jetson', 'cpu', or none")
        object.__setattr__(self, "value", float(self.value))

    @property
    def unit(self) -> str:
        """The unit of the resolved costs: "macs" or "ms"."""
        return "ms" if self.kind == "ms" else "macs"

    def describe(self) -> str:
        where = f" on {self.target}" if self.target else ""
        if self.kind == "macs_fraction":
            return f"{self.value * 100:g} % of the full model's MACs{where}"
        if self.kind == "macs":
            return f"{self.value:g} MACs per sample{where}"
        return f"{self.value:g} ms per sample{where}"

    def resolve(self, costs, latency_ms=None, *, latency_target: str | None = None) -> tuple[np.ndarray, float]:
        """Return `(per-exit cumulative cost vector [E], limit)` in this budget's unit.

        `costs` are the cumulative MACs per exit; `latency_ms` the cumulative milliseconds per exit
        measured on `latency_target` (needed for, and only used by, an `ms` budget).
        """
        macs = check_costs(costs, len(np.atleast_1d(costs)))
        if self.kind == "macs_fraction":
            return macs, self.value * float(macs[-1])
        if self.kind == "macs":
            return macs, self.value
        if latency_ms is None:
            raise BudgetError(f"a millisecond budget ({self.describe()}) needs the target's per-exit latency table",
                              expected=f"latency_ms: cumulative ms to answer at each of the {len(macs)} exits",
                              hint=f"profile the model on {self.target or 'the target'} first (edgeexit profile)")
        if self.target and latency_target and latency_target != self.target:
            raise BudgetError("the latency table was measured on another target than the budget's",
                              got=latency_target, expected=self.target,
                              hint="profile on the budget's target, or pick a preset for this target")
        return check_costs(latency_ms, len(macs), name="latency_ms"), self.value

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Budget":
        unknown = set(data) - {"kind", "value", "target"}
        if unknown or "kind" not in data or "value" not in data:
            raise ConfigError("a budget has the keys kind, value and optionally target",
                              got=sorted(data), expected="kind, value[, target]")
        return cls(kind=data["kind"], value=data["value"], target=data.get("target"))


def presets_dir() -> Path:
    """$EDGEEXIT_CALIBRATION_DIR, else the shipped `calibration/` folder (see tomlfiles.shipped_dir)."""
    return tomlfiles.shipped_dir("calibration", ENV_VAR)


def list_presets(folder: str) -> list[str]:
    """Names of the presets in `calibration/<folder>/` ("budgets" or "recipes")."""
    return tomlfiles.names(presets_dir() / folder)


def load_preset(folder: str, name_or_path: str | Path, build: Callable[[dict], T]) -> T:
    """`build(toml contents)` of a preset name looked up in `calibration/<folder>/`, or of a .toml path."""
    what = f"{folder.rstrip('s')} preset"  # "budget preset", "recipe preset"
    path = tomlfiles.find(presets_dir() / folder, name_or_path, what, "or pass the path of your own .toml file")
    data = tomlfiles.read(path, what)
    try:
        return build(data)
    except ConfigError as exc:
        raise ConfigError(f"bad {what} {path.name}: {exc.what}", got=exc.got, expected=exc.expected,
                          hint=exc.hint) from exc


def load_budget_preset(name_or_path: str | Path) -> Budget:
    """Load a budget from `calibration/budgets/<name>.toml` (e.g. "macs50", "jetson-5ms") or a path."""
    return load_preset("budgets", name_or_path, Budget.from_dict)
