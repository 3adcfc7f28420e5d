"""Checks on per-exit outputs cached from one pass of a model, shared by calibration and pruning.

Every function here returns the checked array (as numpy) or raises an `EdgeExitError` subclass that
says what is wrong; none of them copies data it does not have to.
"""

from __future__ import annotations

import numpy as np

from edgeexit.errors import ConfigError, DatasetError, ShapeError


def check_logits(logits: object) -> np.ndarray:
    """Return per-exit `logits [E, N, C]` after checking shape, dtype and that every value is finite.

    Raises DatasetError when N == 0, ShapeError on a wrong shape or dtype or a NaN/inf logit.
    """
    logits = np.asarray(logits)
    if logits.ndim != 3:
        raise ShapeError("per-exit logits must be a 3-d array", got=f"shape {logits.shape}",
                         expected="[E exits, N samples, C classes]",
                         hint="stack the exits' outputs with np.stack(list_of_[N, C], axis=0)")
    n_exits, n, n_classes = logits.shape
    if n_exits == 0 or n_classes == 0:
        raise ShapeError("per-exit logits have no exits or no classes", got=f"shape {logits.shape}",
                         expected="E >= 1 and C >= 1")
    if n == 0:
        raise DatasetError("the calibration/validation set is empty", got="N = 0 samples",
                           expected="at least one sample",
                           hint="check the split and the recipe's sample count")
    if not np.issubdtype(logits.dtype, np.floating):
        raise ShapeError("per-exit logits must be floating point", got=str(logits.dtype),
                         expected="float32 or float64")
    # one pass, no temporary mask: NaN and inf make the sum non-finite (a finite array overflows it only with values
    # near 1e38, where the exact check below runs and finds nothing)
    if not np.isfinite(logits.sum()) and not np.isfinite(logits).all():
        bad = np.argwhere(~np.isfinite(logits))[0]
        raise ShapeError("per-exit logits hold NaN or inf",
                         got=f"first at [exit, sample, class] = {bad.tolist()}", expected="finite values",
                         hint="the model diverged or a head is broken; re-run the forward pass in float32")
    return logits


def check_outputs(logits: object, labels: object) -> tuple[np.ndarray, np.ndarray]:
    """Return `logits [E, N, C]` and `labels [N]` (int64) after checking both (see `check_logits`).

    Raises, besides `check_logits`' errors, ShapeError when labels are not N integers and
    DatasetError when a label is outside [0, C).
    """
    logits = check_logits(logits)
    _, n, n_classes = logits.shape
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ShapeError("labels do not match the logits", got=f"shape {labels.shape}", expected=f"({n},)")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ShapeError("labels must be integers", got=str(labels.dtype), expected="an integer dtype")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise DatasetError("a label is outside the classes", got=f"range [{labels.min()}, {labels.max()}]",
                           expected=f"[0, {n_classes - 1}]")
    return logits, labels.astype(np.int64, copy=False)


def check_confidences(confidences: object, n_exits: int, n: int, *, name: str = "confidences") -> np.ndarray:
    """Return `confidences [E, N]` after checking shape and that every value is in [0, 1]."""
    conf = np.asarray(confidences)
    if conf.shape != (n_exits, n):
        raise ShapeError(f"{name} do not match the logits", got=f"shape {conf.shape}", expected=f"({n_exits}, {n})")
    if not np.issubdtype(conf.dtype, np.floating) or not np.isfinite(conf).all():
        raise ShapeError(f"{name} must be finite floats", got=str(conf.dtype), expected="float in [0, 1]")
    if conf.min() < 0.0 or conf.max() > 1.0:
        raise ShapeError(f"{name} must lie in [0, 1]", got=f"range [{conf.min()}, {conf.max()}]",
                         expected="[0, 1] (sigmoid outputs)")
    return conf


def check_costs(costs: object, n_exits: int, *, name: str = "costs") -> np.ndarray:
    """Return a cumulative per-exit cost vector `[E]` (float64): finite, >= 0, non-decreasing, last > 0."""
    try:
        vec = np.asarray(costs, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"{name} must be numbers", got=repr(costs)[:80], expected="a list of E floats") from exc
    if vec.shape != (n_exits,):
        raise ShapeError(f"{name} must give one cumulative cost per exit", got=f"shape {vec.shape}",
                         expected=f"({n_exits},)")
    if not np.isfinite(vec).all():
        raise ShapeError(f"{name} hold NaN or inf", got=vec.tolist(), expected="finite values")
    if vec.min() < 0 or vec[-1] <= 0:
        raise ConfigError(f"{name} must be non-negative with a positive full cost", got=vec.tolist())
    if (np.diff(vec) < 0).any():
        raise ConfigError(f"{name} must be cumulative (non-decreasing along the exits)", got=vec.tolist(),
                          expected="costs[k] = cost of everything up to and including exit k",
                          hint="pass cumulative sums (np.cumsum of per-segment + per-head costs); "
                               "for noisy latency tables use np.maximum.accumulate")
    return vec


def check_reference(reference_cost: object, costs: np.ndarray, *, unit: str) -> float:
    """Return `reference_cost`, the unsplit original model's cost in `unit` (the unit of `costs [E]`).

    Fractions of "the full model" divide by it, never by costs[-1] (that includes every head, and a
    pruned network's last exit is not the original model). Raises ConfigError unless it is a positive
    finite number within a factor 1000 of costs[-1] (further apart, the units differ: MACs vs ms).
    """
    if isinstance(reference_cost, bool) or not isinstance(reference_cost, (int, float, np.integer, np.floating)) \
            or not np.isfinite(reference_cost) or reference_cost <= 0:
        raise ConfigError("reference_cost must be the unsplit model's cost, a positive finite number",
                          got=repr(reference_cost), expected=f"the unsplit original model's {unit} per sample",
                          hint="its MACs (pipeline.reference_macs), or its measured ms for an ms budget")
    ratio = float(costs[-1]) / float(reference_cost)
    if not 1e-3 <= ratio <= 1e3:
        raise ConfigError(f"reference_cost and the cost vector look like different units (unit {unit!r})",
                          got=f"reference_cost {float(reference_cost):g}, last exit {float(costs[-1]):g}",
                          expected="the unsplit model's cost in the same unit as the costs",
                          hint="for an ms budget pass the unsplit model's measured ms, otherwise its MACs")
    return float(reference_cost)
