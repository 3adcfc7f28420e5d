"""AEP pruning (Sarti et al., arXiv:2301.12168, Section III): keep the best sub-ensemble of exits, found on validation.

For every non-empty subset S of the E exits the ensemble predicts argmax_c sum_{i in S} beta_i O_i,
where O_i are the raw exit outputs (logits: "linear activation") and beta are AEP's output weights
recomputed for |S| exits in the subset's exit order. The subset with the best validation accuracy
is kept (ties: fewer MACs, then fewer exits, then the lower exit indices); everything after its
last exit is cut off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from edgeexit.aep import aep_weights
from edgeexit.calibrate.inputs import check_outputs
from edgeexit.errors import ConfigError, ShapeError


@dataclass
class PruneResult:
    """The kept sub-network against the full ensemble, and every subset's figures."""

    mode: str
    kept_exits: list[int]
    weights: list[float]  # beta of the kept exits, in order
    accuracy: float
    params: float
    macs: float
    full: dict  # the same figures for all exits kept: {"exits", "accuracy", "params", "macs"}
    subsets: list[dict]  # every non-empty subset: {"exits", "accuracy", "params", "macs"}
    n_samples: int
    objective: str = "ensemble"  # "ensemble" (AEP, arXiv:2301.12168) or "budget" (early-exit accuracy under a budget)
    budget_macs: float | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["vs_full"] = {
            "accuracy_change": self.accuracy - self.full["accuracy"],
            "params_ratio": self.params / self.full["params"] if self.full["params"] else None,
            "macs_ratio": self.macs / self.full["macs"] if self.full["macs"] else None,
            "exits_removed": [e for e in self.full["exits"] if e not in self.kept_exits],
        }
        return out


def _per_exit(values, n_exits: int, name: str) -> np.ndarray:
    try:
        vec = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ShapeError(f"{name} must be numbers", got=repr(values)[:80]) from exc
    if vec.shape != (n_exits,) or not np.isfinite(vec).all() or (vec < 0).any():
        raise ShapeError(f"{name} must hold one finite, non-negative value per exit",
                         got=f"shape {vec.shape}: {vec.tolist()}", expected=f"({n_exits},) >= 0",
                         hint="per segment / per head, not cumulative")
    return vec


def subset_weights(n_exits: int, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Return `(member [2^E-1, E] bool, beta [2^E-1, E])`; row r is the subset with bitmask r + 1 (bit i = exit i)."""
    masks = np.arange(1, 2 ** n_exits)
    member = ((masks[:, None] >> np.arange(n_exits)) & 1).astype(bool)
    beta = np.zeros(member.shape)
    sizes = member.sum(axis=1)
    for m in range(1, n_exits + 1):
        rows = sizes == m
        beta[np.nonzero(rows)[0][:, None], np.nonzero(member[rows])[1].reshape(-1, m)] = aep_weights(m, mode, "output")
    return member, beta


def subset_hits(logits: np.ndarray, labels: np.ndarray, beta: np.ndarray,
                max_chunk_bytes: int = 32 << 20) -> np.ndarray:
    """Number of correct ensemble predictions per row of `beta [S, E]`, chunked to bound memory."""
    n_exits, n, n_classes = logits.shape
    dtype = np.promote_types(logits.dtype, np.float32)
    flat = logits.astype(dtype, copy=False).reshape(n_exits, n * n_classes)
    weights = beta.astype(dtype)
    row_bytes = n * n_classes * np.dtype(dtype).itemsize
    if row_bytes <= max_chunk_bytes:
        rows_per_chunk, samples_per_chunk = max(1, max_chunk_bytes // row_bytes), n
    else:
        rows_per_chunk = 1
        samples_per_chunk = max(1, max_chunk_bytes // (n_classes * np.dtype(dtype).itemsize))
    hits = np.zeros(beta.shape[0], dtype=np.int64)
    for r0 in range(0, beta.shape[0], rows_per_chunk):
        w = weights[r0:r0 + rows_per_chunk]
        for s0 in range(0, n, samples_per_chunk):
            s1 = min(n, s0 + samples_per_chunk)
            block = (w @ flat[:, s0 * n_classes:s1 * n_classes]).reshape(len(w), s1 - s0, n_classes)
            hits[r0:r0 + len(w)] += (block.argmax(axis=-1) == labels[s0:s1]).sum(axis=1)
    return hits


def prune(logits, labels, *, mode: str, segment_params, head_params, segment_macs, head_macs,
          max_chunk_bytes: int = 32 << 20) -> PruneResult:
    """Evaluate every non-empty exit subset on validation outputs and keep the best (Sarti et al., arXiv:2301.12168).

    `logits [E, N, C]` and `labels [N]` come from the validation split; `segment_* [E]` are the
    parameters / MACs of the backbone segment ending at each exit (not cumulative) and `head_* [E]`
    those of each exit head (the final classifier for the last one). A subset's cost is every
    segment up to its last exit plus its own heads. The search is one weight matrix [2^E-1, E] times
    the logits, in chunks of at most `max_chunk_bytes`.
    """
    logits, labels = check_outputs(logits, labels)
    n_exits, n, _ = logits.shape
    if n_exits > 16:
        raise ConfigError("too many exits for an exhaustive subset search", got=n_exits, expected="<= 16",
                          hint="2^E - 1 subsets are evaluated")
    seg_p, head_p = _per_exit(segment_params, n_exits, "segment_params"), _per_exit(head_params, n_exits, "head_params")
    seg_m, head_m = _per_exit(segment_macs, n_exits, "segment_macs"), _per_exit(head_macs, n_exits, "head_macs")
    member, beta = subset_weights(n_exits, mode)
    hits = subset_hits(logits, labels, beta, max_chunk_bytes)
    last = n_exits - 1 - member[:, ::-1].argmax(axis=1)
    params = np.cumsum(seg_p)[last] + member @ head_p
    macs = np.cumsum(seg_m)[last] + member @ head_m
    sizes = member.sum(axis=1)
    order = np.lexsort((np.arange(len(hits)), sizes, macs, -hits))  # last key is the primary one
    best = int(order[0])
    exits = [np.flatnonzero(row).tolist() for row in member]
    rows = [{"exits": exits[r], "accuracy": hits[r] / n, "params": float(params[r]), "macs": float(macs[r])}
            for r in range(len(hits))]
    return PruneResult(
        mode=mode.lower(), kept_exits=exits[best], weights=beta[best][member[best]].tolist(),
        accuracy=rows[best]["accuracy"], params=rows[best]["params"], macs=rows[best]["macs"],
        full=rows[-1], subsets=rows, n_samples=n,
    )


def prune_for_budget(logits, labels, *, mode: str, segment_params, head_params, segment_macs, head_macs,
                     budget_macs: float, reference_macs: float, score: str = "max_softmax") -> PruneResult:
    """The exit subset whose *early-exit* validation accuracy under a mean-cost budget is best.

    AEP (above) keeps the subset with the best ensemble accuracy, which can drop the cheap exits an early-exit
    deployment needs. Here every subset is calibrated instead (the `search` policy on `score`, at
    `budget_macs` mean MACs per sample) with its own costs (segments up to each kept exit plus the kept heads
    so far), and the best calibrated accuracy wins; ties: lower expected cost, then fewer exits. Subsets whose
    cheapest exit is above the budget cannot meet it and are reported with accuracy None.
    The params / MACs / ensemble weights reported are those of the pruned network, as in `prune`;
    `reference_macs` are the unsplit model's (the yardstick of the calibrations' cost fractions).
    """
    from edgeexit.calibrate import Budget, calibrate

    base = prune(logits, labels, mode=mode, segment_params=segment_params, head_params=head_params,
                 segment_macs=segment_macs, head_macs=head_macs)
    logits, labels = check_outputs(logits, labels)
    seg_m, head_m = np.cumsum(np.asarray(segment_macs, np.float64)), np.asarray(head_macs, np.float64)
    best, best_key, rows = None, None, []
    for row in base.subsets:
        kept = row["exits"]
        costs = seg_m[kept] + np.cumsum(head_m[kept])
        entry = {**row, "ensemble_accuracy": row["accuracy"], "accuracy": None, "expected_macs": None}
        if costs[0] <= budget_macs:
            cal = calibrate(logits[kept], labels, costs, Budget("macs", float(budget_macs)), policy="search", kind=score,
                            reference_cost=float(reference_macs))
            entry.update(accuracy=cal.accuracy, expected_macs=cal.mean_cost)
            key = (-cal.accuracy, cal.mean_cost, len(kept))
            if best_key is None or key < best_key:
                best, best_key = entry, key
        rows.append(entry)
    if best is None:
        from edgeexit.errors import BudgetError

        cheapest = float(seg_m[0] + head_m[0])
        raise BudgetError("no exit subset can meet the budget", got=f"{budget_macs:.4g} MACs per sample",
                          expected=f">= {cheapest:.4g} MACs (the first exit alone)",
                          hint="raise the budget, or attach a cheaper first exit")
    beta = aep_weights(len(best["exits"]), mode, "output")
    return PruneResult(mode=base.mode, kept_exits=best["exits"], weights=beta.tolist(), accuracy=best["accuracy"],
                       params=best["params"], macs=best["macs"], full=next(r for r in rows if r["exits"] == base.full["exits"]),
                       subsets=rows, n_samples=base.n_samples, objective="budget", budget_macs=float(budget_macs))
