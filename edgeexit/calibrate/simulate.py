"""The runtime's exit rule, replayed on cached per-exit outputs.

A sample exits at the first exit k with score_k >= eta_k; the final exit always answers, whatever its
threshold says (eta_{E-1} = -inf by convention). Thresholds may be +inf (nobody exits there).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeexit.errors import ShapeError


@dataclass(frozen=True)
class Simulation:
    """Where every sample exits under a set of thresholds, and what that costs and scores."""

    exit_index: np.ndarray  # [N] int, the exit that answers each sample
    correct: np.ndarray  # [N] bool
    accuracy: float
    mean_cost: float  # in the units of `costs`
    exit_fractions: np.ndarray  # [E], sums to 1
    exited_accuracy: np.ndarray  # [E], accuracy among the samples answered at k; NaN where none


def exit_mask(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Return `[E, N]` bool: would sample n leave at exit k if it reached it (final row all True)."""
    passed = scores >= np.asarray(thresholds, dtype=np.float64)[:, None]
    passed[-1] = True
    return passed


def simulate(scores: np.ndarray, preds: np.ndarray, labels: np.ndarray, thresholds, costs) -> Simulation:
    """Apply the exit rule to `scores [E, N]` with per-exit `preds [E, N]`, `labels [N]`, `costs [E]`."""
    scores, preds = np.asarray(scores), np.asarray(preds)
    labels, costs = np.asarray(labels), np.asarray(costs, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if scores.ndim != 2 or preds.shape != scores.shape or labels.shape != scores.shape[1:]:
        raise ShapeError("scores, preds and labels do not line up",
                         got=f"{scores.shape}, {preds.shape}, {labels.shape}",
                         expected="scores [E, N], preds [E, N], labels [N]")
    n_exits, n = scores.shape
    if thresholds.shape != (n_exits,) or costs.shape != (n_exits,):
        raise ShapeError("thresholds and costs need one value per exit", got=f"{thresholds.shape}, {costs.shape}",
                         expected=f"({n_exits},)")
    exit_index = exit_mask(scores, thresholds).argmax(axis=0)
    correct = preds[exit_index, np.arange(n)] == labels
    counts = np.bincount(exit_index, minlength=n_exits)
    hits = np.bincount(exit_index, weights=correct, minlength=n_exits)
    exited_accuracy = np.where(counts > 0, hits / np.maximum(counts, 1), np.nan)
    return Simulation(
        exit_index=exit_index,
        correct=correct,
        accuracy=float(correct.mean()) if n else float("nan"),
        mean_cost=float(costs[exit_index].mean()) if n else float("nan"),
        exit_fractions=counts / max(n, 1),
        exited_accuracy=exited_accuracy,
    )
