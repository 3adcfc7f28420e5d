"""Temperature scaling per exit (Guo et al. 2017, "On Calibration of Modern Neural Networks"): one scalar T_k per
exit, fitted on the calibration set by minimising the negative log-likelihood of softmax(logits_k / T_k), before
thresholds are chosen.

The exit scores computed from logits (max_softmax, margin, neg_entropy) then read logits / T_k, in calibration and
inside the exported segments (`ExitSegment`); predictions, and the `logits` a segment outputs, do not change. The
scores read from a learned branch (EENet confidence, the gater's P_k) are not logits and are left alone.

NLL(β) = mean_i [logsumexp(β·z_i) − β·z_{i,y_i}] with β = 1/T is convex in β, and its derivative
mean_i [E_{softmax(β z_i)}[z_i] − z_{i,y_i}] is non-decreasing, so bisection on the derivative's sign finds the
minimum over [1/T_MAX, 1/T_MIN]. The fitted T is kept only if its NLL is not above that of T = 1 (in float64), so
scaling never raises the calibration NLL.
"""

from __future__ import annotations

import numpy as np

from edgeexit.calibrate.inputs import check_outputs

LOGIT_KINDS = ("max_softmax", "margin", "neg_entropy")  # the scores temperature scaling applies to
T_MIN, T_MAX = 0.05, 20.0
ECE_BINS = 15


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of softmax(logits [N, C] / T) at `labels` [N], in float64."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    return float(-_log_softmax(z)[np.arange(len(labels)), labels].mean())


def _slope(z: np.ndarray, labels: np.ndarray, beta: float) -> float:
    """d NLL / d β at β (z in float64)."""
    p = np.exp(_log_softmax(beta * z))
    return float(((p * z).sum(axis=-1) - z[np.arange(len(labels)), labels]).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, *, steps: int = 80) -> float:
    """T in [T_MIN, T_MAX] minimising the NLL of softmax(logits [N, C] / T) at `labels` [N]; 1.0 unless it lowers it."""
    z, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    lo, hi = 1.0 / T_MAX, 1.0 / T_MIN
    if _slope(z, labels, lo) >= 0:
        beta = lo
    elif _slope(z, labels, hi) <= 0:
        beta = hi
    else:
        for _ in range(steps):
            mid = 0.5 * (lo + hi)
            if _slope(z, labels, mid) > 0:
                hi = mid
            else:
                lo = mid
        beta = 0.5 * (lo + hi)
    temperature = float(np.float32(1.0 / beta))  # the exported graph divides by a float32 constant
    return temperature if nll(z, labels, temperature) <= nll(z, labels, 1.0) else 1.0


def expected_calibration_error(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0,
                               bins: int = ECE_BINS) -> float:
    """ECE of the top-1 confidence of softmax(logits [N, C] / T): Σ_b |B_b|/N·|accuracy(B_b) − confidence(B_b)| over
    `bins` equal-width confidence bins (Guo et al. 2017, Eq. 3)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    p = np.exp(_log_softmax(z))
    conf, correct = p.max(axis=-1), p.argmax(axis=-1) == labels
    which = np.minimum((conf * bins).astype(np.int64), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return float(total)


def fit_temperatures(logits, labels) -> tuple[list[float], dict[str, list[float]]]:
    """Per exit of `logits [E, N, C]`: the fitted T_k, and the report {"nll_before", "nll_after", "ece_before",
    "ece_after"} (one value per exit; before = T 1, after = T_k)."""
    logits, labels = check_outputs(logits, labels)
    temps = [fit_temperature(l, labels) for l in logits]
    report: dict[str, list[float]] = {"nll_before": [], "nll_after": [], "ece_before": [], "ece_after": []}
    for l, t in zip(logits, temps):
        report["nll_before"].append(nll(l, labels))
        report["nll_after"].append(nll(l, labels, t))
        report["ece_before"].append(expected_calibration_error(l, labels))
        report["ece_after"].append(expected_calibration_error(l, labels, t))
    return temps, report


def scale(logits: np.ndarray, temperatures) -> np.ndarray:
    """`logits [E, N, C]` divided by T_k per exit, in float32 as the exported graph computes it."""
    t = np.asarray(temperatures, dtype=np.float32).reshape(-1, 1, 1)
    return (np.asarray(logits, dtype=np.float32) / t).astype(np.float32)
