"""Threshold policies: from cached per-exit outputs and a budget to one `Calibration`.

Every policy sets one threshold eta_k per exit for the single runtime rule (exit at the first k with
score_k >= eta_k; the final exit always answers) and returns what those thresholds achieve on the
calibration set:

- `calibrate_fractions`: papers/003 and MSDNet (Huang et al. 2018): a geometric share of the
  samples leaves at each exit, its ratio solved so that the expected cost meets the budget;
- `calibrate_fixed`: papers/002 (EENets): one threshold T on the confidence h at every exit;
- `calibrate_search`: per-exit thresholds that maximise calibration accuracy at mean cost <= budget;
- `calibrate_gater`: papers/003's gater: exit when P_k >= 0.5.

Inputs everywhere: `logits [E, N, C]` (exit E-1 is the final classifier), `labels [N]`, `costs [E]`
(cumulative MACs of answering at exit k, heads included), `reference_cost` (the unsplit original
model's cost in the budget's unit: its MACs, or its measured ms for a millisecond budget; every
fraction of "the full model" divides by it), optional `confidences [E, N]`, and, for a millisecond
budget, `latency_ms [E]` (cumulative ms per exit measured on `latency_target`). The logit-score policies
(fractions, search) take optional `temperatures [E]`: the score at exit k is then computed on logits / T_k
(temperature scaling, `edgeexit.calibrate.temperature`), as the exported segments compute it.

In place of `logits`, every policy also takes `Scored` outputs (`score_outputs`): the scores, predictions and labels
computed and checked once, so that a sweep over many budgets (`budget_curve`) does not score the same outputs again
for each (scoring is most of a fractions calibration's time).
"""

from __future__ import annotations

import math
import warnings as _warnings
from dataclasses import dataclass

import numpy as np

from edgeexit.calibrate.budget import Budget
from edgeexit.calibrate.calibration import (
    Calibration,
    CalibrationWarning,
    make_calibration,
)
from edgeexit.calibrate.inputs import check_costs, check_outputs, check_reference
from edgeexit.calibrate.scores import exit_scores
from edgeexit.calibrate.simulate import exit_mask
from edgeexit.calibrate.temperature import LOGIT_KINDS, scale
from edgeexit.errors import BudgetError, ConfigError

FRACTION_SCHEMES = ("msdnet", "constant_q")
QUOTA_RULES = ("rounded", "msdnet")  # how the fractions policy turns q_k into a count of samples (calibrate_fractions)


@dataclass(frozen=True)
class Scored:
    """A calibration set's outputs scored once (score_outputs): what every policy reads of them."""

    kind: str
    temperatures: tuple[float, ...] | None
    scores: np.ndarray  # [E, N] float32
    preds: np.ndarray  # [E, N]
    labels: np.ndarray  # [N]


def score_outputs(logits, labels, kind: str = "max_softmax", confidences=None, temperatures=None) -> Scored:
    """`logits [E, N, C]` and `labels [N]` checked and scored once; pass the result as the logits of any policy."""
    scores, preds, labels = _prepare(logits, labels, kind, confidences, temperatures)
    return Scored(kind, _temperature_key(temperatures), scores, preds, labels)


def _temperature_key(temperatures) -> tuple[float, ...] | None:
    """Temperatures as `Scored` records them, to compare with those a policy is given."""
    return None if temperatures is None else tuple(float(t) for t in temperatures)


def _prepare(logits, labels, kind: str, confidences, temperatures=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return `(scores [E, N], preds [E, N], labels [N])` after checking the inputs; the scores of logits / T_k when
    `temperatures` are given. `logits` may be `Scored` already: with the same kind, temperatures and labels."""
    if isinstance(logits, Scored):
        temps = _temperature_key(temperatures)
        if logits.kind != kind or logits.temperatures != temps:
            raise ConfigError("the outputs were scored for another score", got=(logits.kind, logits.temperatures),
                              expected=(kind, temps), hint="score_outputs with the kind and temperatures calibrated")
        if labels is not logits.labels and not np.array_equal(np.asarray(labels), logits.labels):
            raise ConfigError("the labels differ from those the outputs were scored with", got=len(np.asarray(labels)),
                              expected=len(logits.labels), hint="pass the same labels, or score_outputs again")
        return logits.scores, logits.preds, logits.labels
    logits, labels = check_outputs(logits, labels)
    scored = logits
    if temperatures is not None:
        temps = np.asarray(temperatures, dtype=np.float64)
        if temps.shape != (logits.shape[0],) or not np.isfinite(temps).all() or (temps <= 0).any():
            raise ConfigError("temperatures must be one finite T > 0 per exit", got=list(np.atleast_1d(temperatures)),
                              expected=f"{logits.shape[0]} values")
        if kind not in LOGIT_KINDS:
            raise ConfigError(f"temperature scaling applies to scores computed from logits, not {kind!r}",
                              got=kind, expected=" | ".join(LOGIT_KINDS))
        scored = scale(logits, temps)
    return exit_scores(scored, kind, confidences), logits.argmax(axis=-1), labels


def _resolve(budget: Budget | None, costs, latency_ms, latency_target, n_exits: int,
             *, required: bool, reference_cost: float) -> tuple[np.ndarray, str, float | None]:
    """Return `(cost vector [E], unit, limit or None)`; the limit is checked against the cheapest exit."""
    if budget is None:
        if required:
            raise ConfigError("this policy needs a budget", expected="Budget(kind, value[, target])",
                              hint='e.g. load_budget_preset("macs50")')
        cost_vec = check_costs(costs, n_exits)
        check_reference(reference_cost, cost_vec, unit="macs")
        return cost_vec, "macs", None
    if not isinstance(budget, Budget):
        raise ConfigError("a budget must be a Budget", got=type(budget).__name__,
                          hint='Budget("macs_fraction", 0.5) or load_budget_preset("macs50")')
    check_costs(costs, n_exits)
    cost_vec, limit = budget.resolve(costs, latency_ms, latency_target=latency_target, reference_cost=reference_cost)
    if limit < cost_vec[0] * (1 - 1e-12):
        raise BudgetError(f"the budget ({budget.describe()}) is below the cheapest possible mean cost",
                          got=f"{limit:g} {budget.unit} per sample",
                          expected=f">= {cost_vec[0]:g} {budget.unit}: every sample answered at exit 0 "
                                   f"({cost_vec[0] / reference_cost:.1%} of the unsplit model)",
                          hint="raise the budget, or attach a cheaper first exit")
    return cost_vec, budget.unit, limit


# ---------------------------------------------------------------------------------------------------
# fractions


def _distribution(param: float, n_exits: int, scheme: str) -> np.ndarray:
    k = np.arange(n_exits, dtype=np.float64)
    if scheme == "msdnet":  # param = log p; q_k = p^k / sum_j p^j
        logq = k * param
        q = np.exp(logq - logq.max())
        return q / q.sum()
    q = np.empty(n_exits)  # constant_q: param = q, the share of the samples reaching exit k that leave
    q[:-1] = param * (1.0 - param) ** k[:-1]
    q[-1] = (1.0 - param) ** (n_exits - 1)
    return q


def target_fractions(costs, limit: float, scheme: str = "msdnet") -> tuple[np.ndarray, float]:
    """Return `(q [E], parameter)`: the geometric exit distribution whose expected cost sum_k q_k costs[k] = limit.

    scheme "msdnet" (default; MSDNet's budgeted batch classification, which papers/003 follows):
    q_k = z p^k with z normalising over all E exits; the parameter is p, found by bisection (the
    expected cost grows with p). scheme "constant_q" (papers/003's wording, "a fixed fraction q of
    the samples reaching a classifier exits", applied at every exit): q_k = q (1-q)^k for k < E-1
    and the final exit takes the rest; the parameter is q. A limit at or above costs[-1] gives
    everything to the final exit (p = inf, q = 0); at costs[0], everything to exit 0 (p = 0, q = 1).
    """
    if scheme not in FRACTION_SCHEMES:
        raise ConfigError("unknown fractions scheme", got=repr(scheme), expected=" | ".join(FRACTION_SCHEMES))
    costs = np.asarray(costs, dtype=np.float64)
    n_exits = costs.shape[0]
    ascending = scheme == "msdnet"  # does the expected cost grow with the parameter?
    lo, hi = (-700.0 / max(n_exits - 1, 1), 700.0 / max(n_exits - 1, 1)) if ascending else (0.0, 1.0)
    if n_exits == 1 or limit >= costs[-1]:
        q = np.zeros(n_exits)
        q[-1] = 1.0
        return q, (math.inf if ascending else 0.0)
    if limit <= costs[0]:
        q = np.zeros(n_exits)
        q[0] = 1.0
        return q, (0.0 if ascending else 1.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if (_distribution(mid, n_exits, scheme) @ costs > limit) == ascending:
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-13:
            break
    param = lo if ascending else hi  # the side whose expected cost is <= limit
    return _distribution(param, n_exits, scheme), (math.exp(param) if ascending else param)


def _fraction_thresholds(scores: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Thresholds that let share q_k of all samples leave at exit k, set exit by exit (see calibrate_fractions)."""
    n_exits, n = scores.shape
    notes = []
    if n < n_exits:
        notes.append(f"the calibration set has {n} samples for {n_exits} exits: fractions move in steps of 1/{n}")
    cumulative = np.rint(n * np.cumsum(q)).astype(np.int64)
    cumulative[-1] = n
    planned = np.diff(cumulative, prepend=0)
    for k in np.flatnonzero((q > 0) & (planned == 0)):
        notes.append(f"exit {k}: target fraction {q[k]:.4g} x {n} samples rounds to no sample; "
                     f"it needs about {math.ceil(0.5 / q[k])} samples or more")
    thresholds = np.full(n_exits, np.inf)
    running = np.ones(n, dtype=bool)
    left = 0
    for k in range(n_exits - 1):
        want = cumulative[k] - left
        alive = scores[k, running]
        if want <= 0 or alive.size == 0:
            continue
        # eta_k = the want-th highest score among the samples still running
        thresholds[k] = alive.min() if want >= alive.size else np.partition(alive, alive.size - want)[alive.size - want]
        leaving = running & (scores[k] >= thresholds[k])
        count = int(leaving.sum())
        if count > want + 1:
            notes.append(f"exit {k}: tied scores let {count} samples leave where {want} were planned")
        left += count
        running &= ~leaving
    return thresholds, notes


def _msdnet_thresholds(scores: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """MSDNet's quota rule: a port of `Tester.dynamic_eval_find_threshold` in kalviny/MSDNet-PyTorch
    (adaptive_inference.py, the reference code of Huang et al., ICLR 2018), on any score kind.

    The reference, per exit k < E-1: out_n = floor(n * p[k]); walk the samples in descending score_k,
    skipping those already `filtered` (taken by an earlier exit), and at the out_n-th unfiltered one set
    T[k] = its score; then filter every sample with score_k >= T[k]. T starts at 1e8 and stays there when
    out_n = 0 or fewer than out_n unfiltered samples remain; the last T is -1e8. At test time it exits at the
    first k with max_prob >= T[k], edgeexit's rule, so T[k] carries over as it is; 1e8 (above every score)
    becomes +inf here (null in a bundle's manifest) and -1e8 the final exit's -inf.
    """
    n_exits, n = scores.shape
    notes = []
    if n < n_exits:
        notes.append(f"the calibration set has {n} samples for {n_exits} exits: fractions move in steps of 1/{n}")
    # The reference holds p in a torch.FloatTensor, so n * p[k] is a float32 product: floor the same product.
    quotas = np.floor(np.float32(n) * np.asarray(q, dtype=np.float32)).astype(np.int64)
    thresholds = np.full(n_exits, np.inf)
    running = np.ones(n, dtype=bool)
    for k in range(n_exits - 1):
        alive = scores[k, running]
        quota = int(quotas[k])
        if quota == 0:
            if q[k] > 0:
                notes.append(f"exit {k}: floor({n} x target fraction {q[k]:.4g}) = 0: nobody leaves here "
                             f"(MSDNet quota rule); it needs about {math.ceil(1 / q[k])} samples or more")
            continue
        if quota > alive.size:
            notes.append(f"exit {k}: its quota of {quota} samples exceeds the {alive.size} still running (tied "
                         "scores let more leave earlier): nobody leaves here, as in MSDNet's reference code")
            continue
        # the quota-th highest score among the samples still running (ties: the same value, whichever is picked)
        thresholds[k] = np.partition(alive, alive.size - quota)[alive.size - quota]
        leaving = running & (scores[k] >= thresholds[k])
        count = int(leaving.sum())
        if count > quota:
            notes.append(f"exit {k}: tied scores let {count} samples leave where the quota was {quota}")
        running &= ~leaving
    return thresholds, notes


def calibrate_fractions(logits, labels, costs, budget: Budget, *, reference_cost: float, kind: str = "max_softmax",
                        confidences=None, latency_ms=None, latency_target: str | None = None,
                        scheme: str = "msdnet", temperatures=None, quota: str = "rounded") -> Calibration:
    """Thresholds that let a geometric share q_k of ALL calibration samples leave at exit k (papers/003).

    q comes from `target_fractions(costs, budget)`. The thresholds are then set exit by exit among
    the samples still running: eta_k is the n_k-th highest score_k among them (n_k = 0 gives
    eta_k = +inf: nobody leaves at k). `quota` says how q becomes the counts n_k:

    - "rounded" (default): n_k makes the number that has left by exit k equal round(N sum_{j<=k} q_j),
      so, without ties, n_k is within one sample of q_k N and the counts add up to N. Tied scores at
      eta_k all leave (the rule is >=): the achieved fractions, reported in `exit_fractions`, may then
      exceed the target; later exits take fewer to compensate.
    - "msdnet": MSDNet's reference code (`dynamic_eval_find_threshold`, kalviny/MSDNet-PyTorch; see
      `_msdnet_thresholds`): n_k = floor(N q_k), fixed in advance (computed in float32 as there) and not
      corrected for what earlier exits took. Every exit then takes at most its share (ties aside), the
      up to E-1 samples the floors drop go to the final exit, so the calibration cost can sit a little
      above the rounded rule's; a tie at eta_k lets the whole tie leave and later quotas do not shrink
      for it, and an exit whose quota exceeds the samples still running takes nobody (threshold +inf,
      as the reference's 1e8). With `kind="max_softmax"` and no temperatures, the thresholds are the
      reference's T for p = q.

    Warns (CalibrationWarning, also listed in `warnings`) when N < E, when a q_k > 0 rounds (floors)
    to no sample, when ties move an exit's count (by more than one sample under "rounded"), and under
    "msdnet" when a quota exceeds the samples still running.
    """
    if quota not in QUOTA_RULES:
        raise ConfigError("unknown quota rule for the fractions policy", got=repr(quota),
                          expected=" | ".join(QUOTA_RULES),
                          hint="rounded: round the running total (default); msdnet: floor each exit's quota")
    scores, preds, labels = _prepare(logits, labels, kind, confidences, temperatures)
    n_exits, n = scores.shape
    cost_vec, unit, limit = _resolve(budget, costs, latency_ms, latency_target, n_exits, required=True,
                                     reference_cost=reference_cost)
    q, param = target_fractions(cost_vec, limit, scheme)
    thresholds, notes = (_msdnet_thresholds if quota == "msdnet" else _fraction_thresholds)(scores, q)
    for note in notes:
        _warnings.warn(note, CalibrationWarning, stacklevel=2)
    return make_calibration("fractions", kind, thresholds, scores, preds, labels, cost_vec, unit, budget, limit,
                            reference_cost=reference_cost, target_fractions=q, warnings=notes,
                            policy_params={"scheme": scheme, ("p" if scheme == "msdnet" else "q"): param,
                                           "design_cost": float(q @ cost_vec), "quota": quota},
                            temperatures=temperatures)


# ---------------------------------------------------------------------------------------------------
# fixed and gater thresholds


def _constant(policy: str, kind: str, threshold: float, logits, labels, costs, budget, confidences,
              latency_ms, latency_target, reference_cost) -> Calibration:
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
        raise ConfigError(f"the {policy} threshold must be a finite number", got=repr(threshold))
    scores, preds, labels = _prepare(logits, labels, kind, confidences)
    n_exits = scores.shape[0]
    cost_vec, unit, limit = _resolve(budget, costs, latency_ms, latency_target, n_exits, required=False,
                                     reference_cost=reference_cost)
    return make_calibration(policy, kind, [float(threshold)] * n_exits, scores, preds, labels, cost_vec, unit,
                            budget, limit, reference_cost=reference_cost, policy_params={"threshold": float(threshold)})


def calibrate_fixed(logits, labels, costs, budget: Budget | None = None, *, reference_cost: float, confidences,
                    threshold: float = 0.5, latency_ms=None, latency_target: str | None = None) -> Calibration:
    """EENet thresholds (papers/002): exit at the first k with confidence h_k >= T (default T = 0.5).

    Nothing is fitted; a budget, if given, is only checked (`budget_met`), never enforced.
    """
    return _constant("fixed", "confidence", threshold, logits, labels, costs, budget, confidences,
                     latency_ms, latency_target, reference_cost)


def calibrate_gater(logits, labels, costs, budget: Budget | None = None, *, reference_cost: float, confidences,
                    latency_ms=None, latency_target: str | None = None) -> Calibration:
    """Budget-aware gater (papers/003): exit at the first k with gater probability P_k >= 0.5.

    `confidences` are the gater's P_k [E, N]. The budget was set at training time (lambda); one
    given here is only checked (`budget_met`), never enforced.
    """
    return _constant("gater", "gater", 0.5, logits, labels, costs, budget, confidences,
                     latency_ms, latency_target, reference_cost)


# ---------------------------------------------------------------------------------------------------
# search


class _CoordinateSearch:
    """Exact coordinate moves on one threshold at a time, with the others fixed.

    For exit k the only samples that matter are those reaching k; sorted by score_k, any threshold
    lets a prefix of them (up to a tie-group end) leave at k and sends the rest to the next exit that
    accepts them. Cumulative sums over that order give the accuracy and cost of every distinct
    threshold at once, O(N) per move after one sort per exit.
    """

    def __init__(self, scores: np.ndarray, correct: np.ndarray, costs: np.ndarray):
        n_exits, n = scores.shape
        self.scores, self.costs = scores, costs
        self.correct = correct.astype(np.int64)
        self.flat_correct = self.correct.ravel()
        self.order = np.argsort(-scores, axis=1, kind="stable")
        ordered = np.take_along_axis(scores, self.order, axis=1).astype(np.float64)
        ends = np.ones(scores.shape, dtype=bool)
        ends[:, :-1] = ordered[:, :-1] != ordered[:, 1:]
        # per exit: positions in the sorted order where a tie group ends, and the threshold of each
        # cut (candidate 0 = +inf, nobody leaves), descending
        self.ends = [np.flatnonzero(row) for row in ends]
        self.candidates = [np.concatenate(([np.inf], ordered[k][self.ends[k]])) for k in range(n_exits)]
        self.cols = np.arange(n)

    def totals(self, thresholds: np.ndarray) -> tuple[int, float]:
        exit_index = exit_mask(self.scores, thresholds).argmax(axis=0)
        return int(self.correct[exit_index, self.cols].sum()), float(self.costs[exit_index].sum())

    def ascend(self, thresholds: np.ndarray, lam: float, limit_total: float, max_sweeps: int) -> np.ndarray:
        """Coordinate ascent on `hits - lam * total cost` subject to `total cost <= limit_total`.

        Each move takes the best value over every distinct threshold of one exit (ties: lower cost,
        then the higher threshold) and is kept only if it strictly improves; stops after a sweep
        without a move.
        """
        thresholds = thresholds.astype(np.float64).copy()
        n_exits, n = self.scores.shape
        passed = exit_mask(self.scores, thresholds)
        for _ in range(max_sweeps):
            moved = False
            # after[j] = per sample, the first exit >= j that accepts it. Rows > k do not change
            # before exit k is visited in this sweep, so one pass from the end serves the sweep.
            after = [np.full(n, n_exits - 1, dtype=np.int64)] * n_exits
            for j in range(n_exits - 2, 0, -1):
                after[j] = np.where(passed[j], j, after[j + 1])
            before = np.full(n, -1, dtype=np.int64)  # the exit < k that took the sample, or -1
            for k in range(n_exits - 1):
                if k:
                    before = np.where((before < 0) & passed[k - 1], k - 1, before)
                reach = before < 0
                if not reach.any():
                    continue
                # where each sample answers if nobody leaves at k
                stay = np.where(reach, after[k + 1], before)
                hits_stay = self.flat_correct.take(stay * n + self.cols)
                cost_stay = self.costs.take(stay)
                d_hits = (reach * (self.correct[k] - hits_stay)).take(self.order[k])
                d_cost = (reach * (self.costs[k] - cost_stay)).take(self.order[k])
                hits = np.concatenate(([0], np.cumsum(d_hits).take(self.ends[k]))) + hits_stay.sum()
                total = np.concatenate(([0.0], np.cumsum(d_cost).take(self.ends[k]))) + cost_stay.sum()
                value = np.where(total <= limit_total, hits - lam * total, -np.inf)
                top = value.max()
                if not np.isfinite(top):
                    continue  # no threshold of this exit meets the limit from here
                candidates = self.candidates[k]
                now = int(np.searchsorted(-candidates, -thresholds[k], side="right")) - 1  # the current cut
                tol = 1e-9 * max(1.0, abs(top))
                best = int(np.argmin(np.where(value >= top - tol, total, np.inf)))
                better = value[best] > value[now] + tol or (
                    value[best] >= value[now] - tol and total[best] < total[now] - 1e-9 * max(1.0, total[now]))
                if better:
                    thresholds[k] = candidates[best]
                    passed[k] = self.scores[k] >= thresholds[k]
                    moved = True
            if not moved:
                break
        return thresholds


def calibrate_search(logits, labels, costs, budget: Budget, *, reference_cost: float, kind: str = "max_softmax",
                     confidences=None, latency_ms=None, latency_target: str | None = None, max_sweeps: int = 20,
                     lagrange_steps: int = 24, temperatures=None) -> Calibration:
    """Per-exit thresholds that maximise calibration accuracy subject to mean cost <= budget.

    Deterministic local search; every move is an exact coordinate step over every distinct
    calibration score of one exit (`_CoordinateSearch`, O(N) per step):
    1. Lagrangian relaxation: for a multiplier lam, maximise hits - lam * cost with no constraint;
       lam is bisected on a log scale (`lagrange_steps` steps between 1e-9 and 2 / the smallest cost
       step, where everything leaves at exit 0), each solve warm-started from the last feasible one.
    2. Starting points: every feasible solution of step 1, "everything at exit 0", and the
       `fractions` thresholds (both schemes) at 100 / 95 / 90 % of the budget when they fit.
    3. Polish: from each start, maximise accuracy subject to mean cost <= budget (this spends the
       slack the relaxation leaves on a finite set); keep the best (accuracy, then lower cost).
    Ties go to the lower cost. A local optimum: on 3-exit problems it matched exhaustive search or
    fell short by at most 0.35 % of the samples. A budget at or above the last exit's cost
    constrains nothing: the thresholds then maximise calibration accuracy alone, starting from
    "everything at the final exit" (so never below the final exit's accuracy) and taking the
    savings that cost no accuracy. Thresholds are calibration score values (the lowest score that
    leaves) or +inf.
    """
    scores, preds, labels = _prepare(logits, labels, kind, confidences, temperatures)
    n_exits, n = scores.shape
    cost_vec, unit, limit = _resolve(budget, costs, latency_ms, latency_target, n_exits, required=True,
                                     reference_cost=reference_cost)
    search = _CoordinateSearch(scores, preds == labels, cost_vec)
    limit_total = limit * n * (1 + 1e-12)
    params: dict = {"method": "lagrangian coordinate ascent + constrained polish"}
    if limit >= cost_vec[-1]:
        start = np.full(n_exits, np.inf)
        thresholds = search.ascend(start, 0.0, np.inf, max_sweeps)
        params["constrained"] = False
    else:
        steps = np.diff(cost_vec)
        lam_hi = 2.0 / steps[steps > 0].min()
        lo, hi = math.log(lam_hi * 1e-9), math.log(lam_hi)
        start = np.full(n_exits, -np.inf)  # everything at exit 0: always within budget here
        feasible = [start]
        for _ in range(lagrange_steps):
            lam = math.exp(0.5 * (lo + hi))
            candidate = search.ascend(feasible[-1], lam, np.inf, max_sweeps)
            if search.totals(candidate)[1] <= limit_total:
                hi = math.log(lam)
                feasible.append(candidate)
            else:
                lo = math.log(lam)
        for scheme in FRACTION_SCHEMES:  # more feasible starts, spread over the exits
            for scale in (1.0, 0.95, 0.9):
                candidate = _fraction_thresholds(scores, target_fractions(cost_vec, limit * scale, scheme)[0])[0]
                if search.totals(candidate)[1] <= limit_total:
                    feasible.append(candidate)
        # The relaxation leaves a duality gap on a finite set: polish every start under the real
        # constraint and keep the best (hits, then lower cost, then the first found).
        best_key, thresholds, seen = None, start, set()
        for candidate in feasible:
            if tuple(candidate) in seen:
                continue
            seen.add(tuple(candidate))
            polished = search.ascend(candidate, 0.0, limit_total, max_sweeps)
            hits, total = search.totals(polished)
            if best_key is None or (hits, -total) > best_key:
                best_key, thresholds = (hits, -total), polished
        params.update(constrained=True, lagrange_multiplier_final=math.exp(hi))
    return make_calibration("search", kind, thresholds, scores, preds, labels, cost_vec, unit, budget, limit,
                            reference_cost=reference_cost, policy_params=params, temperatures=temperatures)


POLICIES = {
    "fractions": calibrate_fractions,
    "fixed": calibrate_fixed,
    "search": calibrate_search,
    "gater": calibrate_gater,
}


def calibrate(logits, labels, costs, budget: Budget | None = None, *, reference_cost: float, policy: str = "search",
              **options) -> Calibration:
    """Run the policy named `policy` (fractions | fixed | search | gater) with its keyword `options`.

    `reference_cost` is the unsplit model's cost in the budget's unit (see the module docstring).
    """
    if policy not in POLICIES:
        raise ConfigError("unknown calibration policy", got=repr(policy), expected=" | ".join(POLICIES))
    return POLICIES[policy](logits, labels, costs, budget, reference_cost=reference_cost, **options)
