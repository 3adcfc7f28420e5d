"""Calibrate exit thresholds for a budget from per-exit outputs cached from one pass of a model."""

from edgeexit.calibrate.budget import (
    BUDGET_KINDS,
    Budget,
    list_presets,
    load_budget_preset,
)
from edgeexit.calibrate.calibration import Calibration, CalibrationWarning
from edgeexit.calibrate.curves import anytime_curve, budget_curve, plot_curves
from edgeexit.calibrate.policies import (
    FRACTION_SCHEMES,
    POLICIES,
    calibrate,
    calibrate_fixed,
    calibrate_fractions,
    calibrate_gater,
    calibrate_search,
    score_outputs,
    target_fractions,
)
from edgeexit.calibrate.recipe import Recipe, load_recipe
from edgeexit.calibrate.scores import SCORE_KINDS, exit_scores
from edgeexit.calibrate.simulate import Simulation, simulate
from edgeexit.calibrate.temperature import (
    LOGIT_KINDS,
    expected_calibration_error,
    fit_temperature,
    fit_temperatures,
)

__all__ = [
    "BUDGET_KINDS", "FRACTION_SCHEMES", "LOGIT_KINDS", "POLICIES", "SCORE_KINDS",
    "Budget", "Calibration", "CalibrationWarning", "Recipe", "Simulation",
    "anytime_curve", "budget_curve", "calibrate", "calibrate_fixed", "calibrate_fractions", "calibrate_gater",
    "calibrate_search", "exit_scores", "expected_calibration_error", "fit_temperature", "fit_temperatures",
    "list_presets", "load_budget_preset", "load_recipe", "plot_curves",
    "score_outputs", "simulate", "target_fractions",
]
