"""Compute budgets (MACs or measured milliseconds) and the presets in `edgeexit/presets/budgets/*.toml`.

A budget bounds the *mean* cost per sample over the calibration set. It resolves to a per-exit
cumulative cost vector and a limit in the same units. "The full model" is always the unsplit
original model (`reference_cost`), never the last exit (which adds every head, and after pruning is
not the original model):

- `macs_fraction`: costs = cumulative MACs, limit = value x reference_cost (the unsplit model's MACs);
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
from edgeexit.calibrate.inputs import check_costs, check_reference
from edgeexit.errors import BudgetError, ConfigError

BUDGET_KINDS = ("macs_fraction", "macs", "ms")
ENV_VAR = "EDGEEXIT_CALIBRATION_DIR"
PRESET_FOLDERS = ("budgets", "recipes")
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
                              hint="macs_fraction 0.5 = half the unsplit model's MACs")
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
            return f"{self.value * 100:g} % of the unsplit model's MACs{where}"
        if self.kind == "macs":
            return f"{self.value:g} MACs per sample{where}"
        return f"{self.value:g} ms per sample{where}"

    def resolve(self, costs, latency_ms=None, *, latency_target: str | None = None,
                reference_cost: float) -> tuple[np.ndarray, float]:
        """Return `(per-exit cumulative cost vector [E], limit)` in this budget's unit.

        `costs` are the cumulative MACs per exit; `latency_ms` the cumulative milliseconds per exit
        measured on `latency_target` (needed for, and only used by, an `ms` budget). `reference_cost`
        is the unsplit model's cost in this budget's unit (`self.unit`): its MACs, or its measured ms
        for an `ms` budget. A `macs_fraction` limit is value x reference_cost.
        """
        macs = check_costs(costs, len(np.atleast_1d(costs)))
        if self.kind == "macs_fraction":
            return macs, self.value * check_reference(reference_cost, macs, unit=self.unit)
        if self.kind == "macs":
            check_reference(reference_cost, macs, unit=self.unit)
            return macs, self.value
        if latency_ms is None:
            raise BudgetError(f"a millisecond budget ({self.describe()}) needs the target's per-exit latency table",
                              expected=f"latency_ms: cumulative ms to answer at each of the {len(macs)} exits",
                              hint=f"profile the model on {self.target or 'the target'} first (edgeexit profile)")
        if self.target and latency_target and latency_target != self.target:
            raise BudgetError("the latency table was measured on another target than the budget's",
                              got=latency_target, expected=self.target,
                              hint="profile on the budget's target, or pick a preset for this target")
        latency = check_costs(latency_ms, len(macs), name="latency_ms")
        check_reference(reference_cost, latency, unit=self.unit)
        return latency, self.value

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Budget":
        unknown = set(data) - {"kind", "value", "target"}
        if unknown or "kind" not in data or "value" not in data:
            raise ConfigError("a budget has the keys kind, value and optionally target",
                              got=sorted(data), expected="kind, value[, target]")
        return cls(kind=data["kind"], value=data["value"], target=data.get("target"))


def presets_dir(folder: str) -> Path:
    """The folder of the `folder` presets ("budgets" or "recipes"): `$EDGEEXIT_CALIBRATION_DIR/<folder>/`
    if the variable is set, else the package's `edgeexit/presets/<folder>/`."""
    if folder not in PRESET_FOLDERS:
        raise ConfigError("unknown calibration preset folder", got=repr(folder), expected=" | ".join(PRESET_FOLDERS))
    return tomlfiles.preset_dir(folder, ENV_VAR, nested=True)


def list_presets(folder: str) -> list[str]:
    """Names of the presets in `presets_dir(folder)` ("budgets" or "recipes")."""
    return tomlfiles.names(presets_dir(folder))


def load_preset(folder: str, name_or_path: str | Path, build: Callable[[dict], T]) -> T:
    """`build(toml contents)` of a preset name looked up in `presets_dir(folder)`, or of a .toml path."""
    what = f"{folder.rstrip('s')} preset"  # "budget preset", "recipe preset"
    path = tomlfiles.find(presets_dir(folder), name_or_path, what, "or pass the path of your own .toml file")
    data = tomlfiles.read(path, what)
    try:
        return build(data)
    except ConfigError as exc:
        raise ConfigError(f"bad {what} {path.name}: {exc.what}", got=exc.got, expected=exc.expected,
                          hint=exc.hint) from exc


def load_budget_preset(name_or_path: str | Path) -> Budget:
    """Load a budget preset by name (e.g. "macs50", "jetson-5ms"; see `presets_dir("budgets")`) or a path."""
    return load_preset("budgets", name_or_path, Budget.from_dict)
