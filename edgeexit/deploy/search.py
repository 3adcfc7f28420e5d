"""One search over deployments: which exits to keep, where the network ends, and every kept exit's threshold.

A deployment keeps a non-empty exit subset S of the unpruned network (k_1 < ... < k_m; k_m may come before the
final exit: a truncated network with exits; m = 1: a static truncation) and thresholds eta_1..eta_{m-1} (a sample
answers at the first kept exit whose score reaches its threshold; the last kept exit always answers). Every one of
the 2^E - 1 subsets is searched, with thresholds set by exact coordinate moves (`_Moves`): for one exit with the
others fixed, the samples reaching it are sorted by its score once, and prefix sums give the accuracy and cost of
every distinct threshold at once. Per subset, a Lagrangian sweep (maximise hits - lambda * cost, lambda bisected
towards the objective's constraint, each solve warm-started) gives the accuracy-cost front, and the best point is
polished under the real constraint (from the best few feasible points and from quantile starts).
A local search: on 3-exit problems of 200 samples it matched brute force over every threshold pair or fell short by
at most 5.7 % of the cost (max_drop) or 1.5 pt of accuracy (budgets, 3 samples); 7 exits x 10,000 samples take
about 5 s of CPU with the confidence margin's extra rounds (3.5 s for a budget).

Costs come from a `DeploymentCost`: `LatencyCost` (a fitted `CostModel` at an operating batch size, ms per call of a
batch) or `MacCost` (cumulative MACs as a fraction of the unsplit model's: the fallback without a device).
Objectives (`Objective`): `max_drop` (percentage points of validation accuracy below the unsplit model; minimum cost
subject to it, optionally also under a cost cap), or a cost cap alone (`latency_ms` / `macs_fraction`; best
accuracy within it). The drop holds with a stated one-sided confidence (`confidence`, 0.9 by default): a deployment
qualifies when its accuracy minus z * SE of the paired difference (its per-sample correctness minus the unsplit
model's) stays within the drop. Without the margin the search sits exactly on the floor and picks, among thousands
of candidates, the one whose validation luck is best: on the default Fashion-MNIST ResNet-18 it shipped a 0.50 pt
validation drop that was 0.99 pt on the test set. Inputs are the unpruned network's per-exit validation scores and
correctness, N x E (`validation_arrays` computes them as calibration does).
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Annotated, Literal, Protocol, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from edgeexit.calibrate.inputs import check_outputs
from edgeexit.calibrate.scores import exit_scores
from edgeexit.calibrate.temperature import scale
from edgeexit.deploy.costmodel import CostModel
from edgeexit.errors import BudgetError, ConfigError, ShapeError

MAX_EXITS = 12  # 4095 subsets; the search is exhaustive over them
LAGRANGE_STEPS = 10
MAX_SWEEPS = 8
POLISH_STARTS = 4
QUANTILE_STARTS = (0.2, 0.4, 0.6, 0.8)
DROP_CONFIDENCE = 0.9  # one-sided: the allowed drop holds at this confidence on data like the validation set
MARGIN_ROUNDS = 4  # searches with the floor raised by the chosen point's margin, until the margin stops growing
Finite = Annotated[float, Field(allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------------
# inputs


def validation_arrays(logits, labels, *, kind: str = "max_softmax", temperatures=None,
                      confidences=None) -> tuple[np.ndarray, np.ndarray]:
    """(scores [N, E] float32, correct [N, E] bool) of every exit, from per-exit `logits [E, N, C]` and `labels [N]`,
    scored as the exported segments score (logits / T_k when `temperatures` are given)."""
    logits, labels = check_outputs(logits, labels)
    scored = logits if temperatures is None else scale(logits, np.asarray(temperatures, dtype=np.float64))
    scores = exit_scores(scored, kind, confidences)
    correct = logits.argmax(axis=-1) == labels[None]
    return np.ascontiguousarray(scores.T), np.ascontiguousarray(correct.T)


# ---------------------------------------------------------------------------------------------------
# costs


class DeploymentCost(Protocol):
    unit: str

    def linear(self, exits: Sequence[int]) -> tuple[float, np.ndarray]:
        """(constant, cumulative per-sample cost [m]): cost ~ constant + mean over samples of cost[answering run]."""

    def predict(self, exits: Sequence[int], reach: Sequence[float]) -> float:
        """The cost of a deployment where reach[i] of the samples reach run i."""


class LatencyCost:
    """A fitted cost model at an operating batch size: predicted ms per call of a batch."""

    unit = "ms"

    def __init__(self, model: CostModel, batch: int = 1):
        self.model, self.batch = model, model._check_batch(batch)

    def linear(self, exits):
        return self.model.linear(exits, self.batch)

    def predict(self, exits, reach):
        return self.model.predict(exits, reach, self.batch)


class MacCost:
    """Cumulative MACs as a fraction of the unsplit model's: the backbone up to the answering exit plus every kept head
    on the way (`segment_macs [E]` without heads, `head_macs [E]` with the final classifier last)."""

    unit = "macs_fraction"

    def __init__(self, segment_macs, head_macs, full_macs: float):
        self.seg = np.cumsum(np.asarray(segment_macs, dtype=np.float64))
        self.head = np.asarray(head_macs, dtype=np.float64)
        if self.seg.shape != self.head.shape or not full_macs > 0:
            raise ShapeError("MACs need one segment and one head value per exit, and full MACs > 0",
                             got=f"{self.seg.shape}, {self.head.shape}, {full_macs}")
        self.full = float(full_macs)

    @classmethod
    def from_costs(cls, costs) -> "MacCost":
        """From `edgeexit.models.costs.count_costs` of the unpruned network."""
        return cls(costs.segment_macs, costs.head_macs, costs.full_macs)

    @classmethod
    def from_manifest(cls, manifest) -> "MacCost":
        """From an unpruned bundle's manifest (per exit: `macs` of the segment without its head, `head_macs`)."""
        return cls([e.macs for e in manifest.exits], [e.head_macs for e in manifest.exits],
                   manifest.full_macs)

    def linear(self, exits):
        ks = list(exits)
        return 0.0, (self.seg[ks] + np.cumsum(self.head[ks])) / self.full

    def predict(self, exits, reach):
        cum = self.linear(exits)[1]
        p = np.asarray(reach, dtype=np.float64)
        answer = p - np.append(p[1:], 0.0)  # the share answering at each kept exit
        return float(answer @ cum)


# ---------------------------------------------------------------------------------------------------
# objective and results


class Objective(_Model):
    """`max_drop` (points of accuracy below the unsplit model): the cheapest deployment within it; without it, the
    most accurate deployment within the cost cap (`latency_ms` per call of the operating batch, or `macs_fraction`)."""

    max_drop: Finite | None = None
    confidence: Annotated[float, Field(ge=0.5, lt=1.0)] = DROP_CONFIDENCE  # of max_drop; 0.5: no margin
    latency_ms: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    macs_fraction: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _one(self) -> "Objective":
        if self.max_drop is None and self.latency_ms is None and self.macs_fraction is None:
            raise ValueError("give max_drop, latency_ms or macs_fraction")
        if self.latency_ms is not None and self.macs_fraction is not None:
            raise ValueError("give one cost cap: latency_ms or macs_fraction")
        return self

    @property
    def z(self) -> float:
        """The one-sided normal quantile of `confidence` (0 at 0.5)."""
        return statistics.NormalDist().inv_cdf(self.confidence)

    def floor(self, full_hits: int, n: int) -> float:
        """The hits (correct answers of `n`) that are `max_drop` points below the unsplit model's `full_hits`."""
        return n * (full_hits / n - self.max_drop / 100.0)

    def within_drop(self, d: "Deployment", full: "Deployment", n: int) -> bool:
        """Whether `d` is within `max_drop` of the unsplit model `full` at `confidence` over `n` validation samples
        (counted in whole samples, a hair of slack for float rounding)."""
        hits, full_hits = round(d.accuracy * n), round(full.accuracy * n)
        return hits - self.z * d.diff_se * n >= self.floor(full_hits, n) - 1e-6

    def within_cap(self, d: "Deployment") -> bool:
        """Whether `d`'s cost is within the cost cap (always, without one; a hair of slack for float rounding)."""
        return self.cap is None or d.cost <= self.cap * (1 + 1e-12)

    @property
    def cap(self) -> float | None:
        return self.latency_ms if self.latency_ms is not None else self.macs_fraction

    @property
    def cap_unit(self) -> str | None:
        return "ms" if self.latency_ms is not None else "macs_fraction" if self.macs_fraction is not None else None

    def describe(self) -> str:
        parts = []
        if self.max_drop is not None:
            parts.append((f"at most {self.max_drop:g} pt below the unsplit model" if self.max_drop >= 0 else
                          f"at least {-self.max_drop:g} pt above the unsplit model")
                         + (f" at {100 * self.confidence:g} % one-sided confidence" if self.confidence > 0.5 else ""))
        if self.latency_ms is not None:
            parts.append(f"within {self.latency_ms:g} ms")
        if self.macs_fraction is not None:
            parts.append(f"within {self.macs_fraction:g} of the unsplit model's MACs")
        return ("fastest " if self.max_drop is not None else "most accurate ") + ", ".join(parts)


def make_objective(*, max_drop: float | None = None, latency_ms: float | None = None,
                   macs_fraction: float | None = None, confidence: float = DROP_CONFIDENCE) -> Objective:
    """An Objective from user input, refused with a ConfigError (not pydantic's) when it is not one."""
    try:
        return Objective(max_drop=max_drop, latency_ms=latency_ms, macs_fraction=macs_fraction,
                         confidence=confidence)
    except ValueError as err:
        first = err.errors()[0] if hasattr(err, "errors") else {"msg": str(err)}
        raise ConfigError("not a deployment objective", got=f"max_drop={max_drop}, latency_ms={latency_ms}, "
                          f"macs_fraction={macs_fraction}: {first['msg']}",
                          expected="--max-drop PT (finite, confidence in [0.5, 1)), and/or one budget: latency > 0 ms "
                                   "or a MAC fraction > 0",
                          hint="e.g. --max-drop 0.5, or --budget 3ms@android") from None


class Deployment(_Model):
    """One candidate: kept exits (indices of the unpruned network), thresholds (the last is None: it always answers;
    None elsewhere: nobody leaves there), validation accuracy, predicted cost and where samples answer."""

    exits: list[int]
    thresholds: list[Finite | None]
    kind: Literal["static", "early_exit", "full"]
    accuracy: Finite
    cost: Finite  # in the search's unit
    exit_fractions: list[Finite]
    diff_se: Finite = 0.0  # standard error of (accuracy - the unsplit model's), paired over the validation samples


class SearchResult(_Model):
    objective: Objective
    unit: str
    batch: int | None  # the operating batch size of a latency search
    n_samples: int
    num_exits: int
    full: Deployment  # the unsplit model
    statics: list[Deployment]  # every static truncation (the last: the unsplit model)
    chosen: Deployment
    candidates: list[Deployment]  # every point the search considered, statics and the unsplit model included
    subsets: int  # how many exit subsets were searched
    seconds: float


# ---------------------------------------------------------------------------------------------------
# the exact coordinate moves


class _Exits:
    """Per exit, computed once: the samples in descending score order, the end of each tie group, and the
    threshold of each cut (cut 0: +inf, nobody leaves; cut j: the score that ends tie group j - 1)."""

    def __init__(self, scores: np.ndarray, correct: np.ndarray):
        self.scores, self.correct = scores, correct.astype(np.int64)  # [E, N]
        n_exits, n = scores.shape
        self.order = np.argsort(-scores, axis=1, kind="stable")
        self.rank = np.empty_like(self.order)
        np.put_along_axis(self.rank, self.order, np.arange(n)[None].repeat(n_exits, 0), axis=1)
        ordered = np.take_along_axis(scores, self.order, axis=1)
        ends = np.ones(scores.shape, dtype=bool)
        ends[:, :-1] = ordered[:, :-1] != ordered[:, 1:]
        self.ends = [np.flatnonzero(row) for row in ends]
        self.leave = [np.concatenate(([0], e + 1)) for e in self.ends]  # samples that leave at each cut
        self.values = [np.concatenate(([np.inf], ordered[k][self.ends[k]].astype(np.float64))) for k in range(n_exits)]


class _Subset:
    """Coordinate moves over the cuts of one exit subset, on hits (correct answers) and total cost (summed over
    samples, of the linear stand-in)."""

    def __init__(self, ex: _Exits, exits: list[int], cum: np.ndarray):
        self.ex, self.ks, self.cum = ex, exits, cum
        self.m, self.n = len(exits), ex.scores.shape[1]
        self.correct = ex.correct[exits]  # [m, N]
        self.flat = self.correct.ravel()
        self.cols = np.arange(self.n)

    def passed(self, cuts: np.ndarray) -> np.ndarray:
        out = np.ones((self.m, self.n), dtype=bool)
        for i in range(self.m - 1):
            out[i] = self.ex.rank[self.ks[i]] < self.ex.leave[self.ks[i]][cuts[i]]
        return out

    def answer(self, cuts: np.ndarray) -> np.ndarray:
        return self.passed(cuts).argmax(axis=0)

    def totals(self, cuts: np.ndarray) -> tuple[int, float]:
        a = self.answer(cuts)
        return int(self.flat[a * self.n + self.cols].sum()), float(self.cum[a].sum())

    def ascend(self, cuts: np.ndarray, mode: str, param: float) -> np.ndarray:
        """mode "lagrange": max hits - param * total; "cap": max hits s.t. total <= param (ties: lower total);
        "floor": min total s.t. hits >= param (ties: more hits). Moves only on strict improvement."""
        cuts = cuts.copy()
        passed = self.passed(cuts)
        m, n = self.m, self.n
        for _ in range(MAX_SWEEPS):
            moved = False
            after = [np.full(n, m - 1, dtype=np.int64)] * m
            for j in range(m - 2, 0, -1):
                after[j] = np.where(passed[j], j, after[j + 1])
            before = np.full(n, -1, dtype=np.int64)
            for i in range(m - 1):
                if i:
                    before = np.where((before < 0) & passed[i - 1], i - 1, before)
                reach = before < 0
                stay = np.where(reach, after[i + 1], before)
                hits_stay = self.flat.take(stay * n + self.cols)
                cost_stay = self.cum.take(stay)
                order, ends = self.ex.order[self.ks[i]], self.ex.ends[self.ks[i]]
                d_hits = (reach * (self.correct[i] - hits_stay)).take(order)
                d_cost = (reach * (self.cum[i] - cost_stay)).take(order)
                hits = np.concatenate(([0], np.cumsum(d_hits).take(ends))) + hits_stay.sum()
                total = np.concatenate(([0.0], np.cumsum(d_cost).take(ends))) + cost_stay.sum()
                if mode == "lagrange":
                    primary, secondary = hits - param * total, -total
                elif mode == "cap":
                    primary = np.where(total <= param, hits, -np.inf)
                    secondary = -total
                else:
                    primary = np.where(hits >= param, -total, -np.inf)
                    secondary = hits.astype(np.float64)
                top = primary.max()
                if not np.isfinite(top):
                    continue
                tol = 1e-9 * max(1.0, abs(top))
                best = int(np.argmax(np.where(primary >= top - tol, secondary, -np.inf)))
                now = cuts[i]
                if primary[best] > primary[now] + tol or (primary[best] >= primary[now] - tol
                                                          and secondary[best] > secondary[now] + 1e-9 * max(1.0, abs(secondary[now]))):
                    cuts[i] = best
                    passed[i] = self.ex.rank[self.ks[i]] < self.ex.leave[self.ks[i]][best]
                    moved = True
            if not moved:
                break
        return cuts


# ---------------------------------------------------------------------------------------------------
# the search


def _check(scores, correct) -> tuple[np.ndarray, np.ndarray]:
    s, c = np.asarray(scores), np.asarray(correct)
    if s.ndim != 2 or c.shape != s.shape or s.shape[0] < 1 or s.shape[1] < 1:
        raise ShapeError("scores and correctness must be two N x E arrays", got=f"{s.shape}, {c.shape}",
                         expected="scores [N, E], correct [N, E] of the unpruned network's validation outputs")
    if not np.isfinite(s).all():
        raise ShapeError("scores hold NaN or inf", got=f"{int((~np.isfinite(s)).sum())} values")
    if s.shape[1] > MAX_EXITS:
        raise ConfigError("too many exits for an exhaustive deployment search", got=s.shape[1],
                          expected=f"<= {MAX_EXITS}", hint="2^E - 1 subsets are searched")
    return np.ascontiguousarray(s.T.astype(np.float32)), np.ascontiguousarray(c.T.astype(bool))


def _deployment(sub: _Subset, cuts: np.ndarray, cost: DeploymentCost, final: int) -> Deployment:
    a = sub.answer(cuts)
    counts = np.bincount(a, minlength=sub.m) / sub.n
    reach = counts[::-1].cumsum()[::-1]
    thresholds = [None if math.isinf(sub.ex.values[k][c]) else float(sub.ex.values[k][c])
                  for k, c in zip(sub.ks[:-1], cuts)] + [None]
    kind = "full" if sub.ks == [final] else "static" if sub.m == 1 else "early_exit"
    mine = sub.flat[a * sub.n + sub.cols]
    diff = mine - sub.ex.correct[final]  # -1, 0, 1 per sample
    var_sum = max(0.0, float(np.count_nonzero(diff)) - float(diff.sum()) ** 2 / sub.n)
    return Deployment(exits=list(sub.ks), thresholds=thresholds, kind=kind, accuracy=float(mine.mean()),
                      cost=float(cost.predict(sub.ks, reach.tolist())), exit_fractions=counts.tolist(),
                      diff_se=math.sqrt(var_sum) / sub.n)


def _front(sub: _Subset, const: float, objective: Objective, floor_hits: int | None) -> list[np.ndarray]:
    """Cuts of every point the subset's search visits: the Lagrangian sweep towards the constraint, then the best
    feasible point polished under it."""
    n, m = sub.n, sub.m
    steps = np.diff(sub.cum)
    positive = steps[steps > 0]
    everyone_first = np.array([len(sub.ex.leave[k]) - 1 for k in sub.ks[:-1]])
    nobody_early = np.zeros(m - 1, dtype=np.int64)
    points = [everyone_first, nobody_early]
    cap_total = None if objective.cap is None else (objective.cap - const) * n * (1 + 1e-12)
    if cap_total is not None and cap_total < 0:
        return points  # the constant part alone is over the cap: nothing of this subset fits
    # lambda = 0: the most accurate thresholds; lambda_hi: everything leaves at the first kept exit
    best_acc = sub.ascend(nobody_early, "lagrange", 0.0)
    points.append(best_acc)
    if positive.size:
        lo, hi = math.log(2.0 / positive.max() * 1e-6), math.log(2.0 / positive.min())
        warm = best_acc
        for _ in range(LAGRANGE_STEPS):
            lam = math.exp(0.5 * (lo + hi))
            cand = sub.ascend(warm, "lagrange", lam)
            hits, total = sub.totals(cand)
            points.append(cand)
            if floor_hits is not None and hits < floor_hits:
                hi = math.log(lam)  # too inaccurate: spend more
            elif cap_total is not None and total > cap_total:
                lo = math.log(lam)  # too expensive: save more
            else:  # feasible: towards cheaper when minimising cost, towards more accurate when maximising accuracy
                warm = cand
                if floor_hits is not None:
                    lo = math.log(lam)
                else:
                    hi = math.log(lam)
    # more starts, spread over the exits: at each kept exit the top share q of all samples would leave
    for q in QUANTILE_STARTS:
        points.append(np.array([int(np.searchsorted(sub.ex.leave[k], q * n)) for k in sub.ks[:-1]]))
    # polish the feasible points under the real constraint
    feasible = []
    for cuts in points:
        hits, total = sub.totals(cuts)
        if (floor_hits is None or hits >= floor_hits) and (cap_total is None or total <= cap_total):
            feasible.append((cuts, hits, total))
    if not feasible:
        return points
    # a local search: polish the best few feasible starts (the relaxation's points differ in which exits take whom)
    if floor_hits is not None:
        starts = sorted(feasible, key=lambda f: (f[2], -f[1]))[:POLISH_STARTS]
    else:
        starts = sorted(feasible, key=lambda f: (-f[1], f[2]))[:POLISH_STARTS]
    for start, _, _ in starts:
        if floor_hits is not None:
            polished = sub.ascend(start, "floor", floor_hits)
            if cap_total is not None and sub.totals(polished)[1] > cap_total:
                continue
        else:
            polished = sub.ascend(start, "cap", cap_total)
        points.append(polished)
    return points


def search_deployments(scores, correct, cost: DeploymentCost, objective: Objective, *,
                       keep_final: bool = False) -> SearchResult:
    """The best deployment for `objective` over every exit subset x thresholds (see the module's doc), and every
    candidate considered. `keep_final`: only subsets that keep the final exit (a network whose own classifier must
    stay: --freeze-backbone), so no static truncation but the unsplit model. Raises BudgetError naming the best
    reachable value when nothing meets the objective."""
    t0 = time.perf_counter()
    if objective.cap_unit is not None and objective.cap_unit != cost.unit:
        raise ConfigError("the budget's unit is not the cost's", got=objective.cap_unit, expected=cost.unit,
                          hint="a millisecond budget needs a cost model (a profile of the target); MAC budgets "
                               "take MacCost")
    s, c = _check(scores, correct)
    n_exits, n = s.shape
    final = n_exits - 1
    ex = _Exits(s, c)
    full_hits = int(c[final].sum())
    base_floor = None
    if objective.max_drop is not None:
        # the smallest number of hits with accuracy >= full - drop (a hair of slack for float rounding)
        base_floor = max(0, math.ceil(objective.floor(full_hits, n) - 1e-9))
    candidates: list[Deployment] = []
    seen: set = set()
    masks = [m for m in range(1, 2 ** n_exits) if not keep_final or m >> final & 1]
    subsets = []
    for mask in masks:
        ks = [k for k in range(n_exits) if mask >> k & 1]
        const, cum = cost.linear(ks)
        subsets.append((mask, const, _Subset(ex, ks, np.asarray(cum, dtype=np.float64))))

    def visit(floor_hits: int | None) -> None:
        for mask, const, sub in subsets:
            if sub.m == 1:
                points = [np.zeros(0, dtype=np.int64)]
            elif floor_hits is not None and int(sub.correct.any(axis=0).sum()) < floor_hits:
                points = [sub.ascend(np.zeros(sub.m - 1, dtype=np.int64), "lagrange", 0.0)]  # cannot reach: its best
            else:
                points = _front(sub, const, objective, floor_hits)
            for cuts in points:
                key = (mask, tuple(int(x) for x in cuts))
                if key not in seen:
                    seen.add(key)
                    candidates.append(_deployment(sub, cuts, cost, final))

    # the floor starts at the plain drop and rises by the margin (z * SE) of the cheapest point on it, so that the
    # polishing aims where the deployments within the drop at the stated confidence lie
    margin = 0
    for _ in range(MARGIN_ROUNDS if base_floor is not None else 1):
        floor_hits = None if base_floor is None else base_floor + margin
        visit(floor_hits)
        if floor_hits is None or objective.z <= 0:
            break
        on_floor = [d for d in candidates if objective.within_cap(d) and round(d.accuracy * n) >= floor_hits]
        if not on_floor:
            break
        cheapest = min(on_floor, key=lambda d: (d.cost, -d.accuracy))
        need = math.ceil(objective.z * cheapest.diff_se * n - 1e-9)
        if need <= margin:
            break
        margin = need
    statics = sorted((d for d in candidates if len(d.exits) == 1), key=lambda d: d.exits[0])
    full = statics[-1]

    def meets(d: Deployment) -> bool:
        return objective.within_cap(d) and (base_floor is None or objective.within_drop(d, full, n))

    feasible = [d for d in candidates if meets(d)]
    if not feasible:
        _refuse(objective, candidates, base_floor, n, full, cost.unit)
    if objective.max_drop is not None:
        chosen = min(feasible, key=lambda d: (d.cost, -d.accuracy, len(d.exits)))
    else:
        chosen = max(feasible, key=lambda d: (d.accuracy, -d.cost, -len(d.exits)))
    return SearchResult(objective=objective, unit=cost.unit, batch=getattr(cost, "batch", None), n_samples=n,
                        num_exits=n_exits, full=full, statics=statics, chosen=chosen, candidates=candidates,
                        subsets=len(masks), seconds=time.perf_counter() - t0)


def _refuse(objective: Objective, candidates: list[Deployment], floor_hits: int | None, n: int, full: Deployment,
            unit: str) -> None:
    fmt = (lambda v: f"{v:.4g} ms") if unit == "ms" else (lambda v: f"{v:.4g} of the unsplit model's MACs")
    cap = objective.cap
    if floor_hits is not None:
        within = [d for d in candidates if objective.within_cap(d)]
        if not within:
            cheapest = min(candidates, key=lambda d: d.cost)
            raise BudgetError("no deployment fits the budget", got=objective.describe(),
                              expected=f">= {fmt(cheapest.cost)}: the cheapest deployment (exits {cheapest.exits})",
                              hint="raise the budget")
        best = max(within, key=lambda d: d.accuracy)
        raise BudgetError("no deployment meets the allowed accuracy drop", got=objective.describe(),
                          expected=f"accuracy >= {100 * floor_hits / n:.2f} % "
                                   f"(the unsplit model's {100 * full.accuracy:.2f} % {'-' if objective.max_drop >= 0 else '+'} "
                                   f"{abs(objective.max_drop):g} pt"
                                   + (f", at {100 * objective.confidence:g} % one-sided confidence: accuracy - "
                                      f"{objective.z:.2f} x its paired standard error)" if objective.z > 0 else ")"),
                          hint=f"the best reachable{' within the budget' if cap is not None else ''} is "
                               f"{100 * best.accuracy:.2f} % (drop {100 * (full.accuracy - best.accuracy):.2f} pt, "
                               f"exits {best.exits}, {fmt(best.cost)}): allow that drop, or raise the budget")
    cheapest = min(candidates, key=lambda d: d.cost)
    raise BudgetError("no deployment fits the budget", got=objective.describe(),
                      expected=f">= {fmt(cheapest.cost)}: the cheapest deployment (exits {cheapest.exits}, "
                               f"{100 * cheapest.accuracy:.2f} %)",
                      hint="raise the budget, or profile again if the device was busy")
