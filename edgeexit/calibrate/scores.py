"""Exit scores: how confident an exit is about a sample; higher means more confident.

The runtime exits at the first exit k where score_k >= eta_k. The numpy scores here (calibration)
and the torch scores from `edgeexit.models.scores.score_fn_torch` (baked into exported graphs) compute the same thing, in
float32, because the deployed graph does: scores that saturate to 1.0 in float32 tie at run time,
so calibration must see the same ties.
"""

from __future__ import annotations

import numpy as np

from edgeexit.calibrate.inputs import check_confidences, check_logits
from edgeexit.errors import ConfigError, ShapeError

SCORE_KINDS = ("max_softmax", "margin", "neg_entropy", "confidence", "gater")
# Kinds read from a learned branch (EENet confidence h, the budget-aware gater's P_k), not the logits.
BRANCH_KINDS = ("confidence", "gater")


def check_kind(kind: str) -> str:
    if kind not in SCORE_KINDS:
        raise ConfigError("unknown exit score kind", got=repr(kind), expected=" | ".join(SCORE_KINDS))
    return kind


def exit_scores(logits: np.ndarray, kind: str, confidences: np.ndarray | None = None) -> np.ndarray:
    """Return the `[E, N]` float32 scores of `kind` for per-exit `logits [E, N, C]`.

    max_softmax = max_c p_c; margin = top-1 minus top-2 softmax probability (needs C >= 2);
    neg_entropy = sum_c p_c log p_c (= -entropy, <= 0); confidence / gater = `confidences [E, N]`
    (EENet h or gater P_k, in [0, 1]) as given. Softmax is computed with the max subtracted.
    """
    check_kind(kind)
    logits = check_logits(logits)
    n_exits, n, n_classes = logits.shape
    if kind in BRANCH_KINDS:
        if confidences is None:
            raise ConfigError(f"score kind {kind!r} reads per-exit confidences, none were given",
                              expected="confidences [E, N] from the model's confidence/gater branch",
                              hint="pass confidences=..., or use a logit score: max_softmax | margin | neg_entropy")
        return check_confidences(confidences, n_exits, n, name=f"{kind} scores").astype(np.float32)
    if kind == "margin" and n_classes < 2:
        raise ShapeError("the margin score needs at least two classes", got=f"C = {n_classes}", expected="C >= 2")
    z = logits.astype(np.float32, copy=False)
    z = z - z.max(axis=-1, keepdims=True)
    expz = np.exp(z)
    total = expz.sum(axis=-1, keepdims=True)
    if kind == "max_softmax":
        # the top class has exp(0) = 1 exactly, so max_c p_c = 1 / total, bit for bit (division is monotone), without
        # dividing every class
        return np.reciprocal(total[..., 0])
    prob = expz / total
    if kind == "margin":
        top2 = np.partition(prob, n_classes - 2, axis=-1)[..., -2:]
        return top2.max(axis=-1) - top2.min(axis=-1)
    log_prob = z - np.log(total)
    return (prob * log_prob).sum(axis=-1)
