"""A latency model of any deployment, fitted from one profile of the unpruned bundle.

A deployment keeps exits S = k_1 < ... < k_m of the network (the last kept exit may come before the original final
one) and runs them as m segment calls: run i is the backbone from exit k_{i-1} up to k_i plus head k_i. Per batch
size the profile (`edgeexit.profile.summarise`) measured, per exit k, the truncated network alone (`static`), the
head alone (`head`), the segment alone (`segment`), the exit loop forced to answer at k (`cumulative`) and the exit
loop answering at k through k's exit test (`answer`, every exit but the last), plus the unsplit model (`full`).
The unpruned bundle is profiled with finite thresholds (`tested_thresholds` in edgeexit/deploy/stage.py), so its
forced runs pay every earlier exit's test (score download, compare, NaN check) as a sample that goes on pays it.
In those terms (all per call of a batch, in ms):

    S_k   one bare call of the network truncated at k (backbone + head k)
    H_k   an intermediate head alone, its call overhead included            = head_k
    D     what one more segment boundary adds in the exit loop beyond the segment's own call: the loop step and the
          exit test of the exit before it
    L     what the exit loop adds once per call (input checks, output buffers, the final scatter, the NaN check)
    P     what a plain call of one whole graph adds to its bare call (input checks, upload, download, NaN check):
          the unsplit model as users call it, and a one-segment bundle (a static truncation, run as a plain call)
    A     what leaving at an exit through its test adds to answering there: the test itself and its branch (a
          forced answer has neither). Measured 28 us of a 0.25 ms path on ExecuTorch in Python before its loop's
          bookkeeping moved to numpy: the missing term when every early-exit bundle was predicted 10-17 % fast

    static_k = S_k + P,   segment_0 = S_0,   segment_k = S_k - S_{k-1} + H_{k-1},
    cumulative_k = S_k + sum_{i<k} H_i + k D + L,   answer_k = cumulative_k + A,   full = S_{E-1} + P

The profile times `static_k` and `full` as plain calls, the way a deployed static truncation and the unsplit model
run (the Python runner through the runtime's one-segment path; the C++ runner's calls have no such overhead, P ~ 0),
and the segments and heads bare, so P is measured by every static together, not by `full` alone.

(the head and the call overhead inside a bare call cannot be told apart; these combinations can.) The parameters
are a weighted least-squares fit, each equation divided by its measurement (every entry counts relatively) and the
exit loop's own entries (`cumulative`, `answer`) weighted `LOOP_WEIGHT` times: a deployment runs in that loop, and
the bare calls, timed back to back on a warm cache, only apportion the loop's time to segments and heads. (Without a
final exit in the profile, `full` is another network: P then comes from the statics alone, and is 0 without them; A
is 0 for a profile without `answer` entries.)
A deployment answering at run i with probability P(reach run i) = P_i is predicted as

    single exit k:  a plain call of the truncated network: the measured static_k (unmeasured: S_k + P; at the final
                    exit of an unpruned profile: the unsplit model, measured);
    m >= 2:         T_1 + sum_{i>=2} T_i(P_i) + sum_{i<m} A(P_i - P_{i+1}),
                    T_1 = S_{k_1} + L,   T_i = S_{k_i} - S_{k_{i-1}} + H_{k_{i-1}} + D

With batch b > 1 and compaction, run i sees a live batch n = b P_i: its time is interpolated linearly in n between
the profiled batch sizes (n below the smallest: that time scaled by n, the expected cost when a run happens with
probability n); the copies of compaction (gathering the survivors) are not in the profile. The error the model
states (`stated_error`) is leave-one-out: every `cumulative` and `answer` entry, the ones deployments are made of,
predicted by a fit without it, the worst over batch sizes; statics and the unsplit model are measured, not
predicted. The profile's own noise (the unsplit model timed twice) comes on top.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from edgeexit.errors import ConfigError, DeviceError
from edgeexit.jsonio import write_atomic

FORMAT = "edgeexit-costmodel/1"
FILE = "costmodel.json"  # its name in a run directory, next to profile.json
Ms = Annotated[float, Field(allow_inf_nan=False)]
END_FRACTION = 0.99  # a last exit at >= 99 % of the unsplit model's MACs is the original final exit
LOOP_WEIGHT = 10.0  # the exit loop's own entries against the bare calls (see the module's doc)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchFit(_Model):
    """The fitted parameters at one profiled batch size (ms per call of the batch)."""

    batch: Annotated[int, Field(ge=1)]
    static_ms: list[Ms | None]  # measured one-call time truncated at each exit (None: not measured)
    full_ms: Ms  # the unsplit original model
    s_ms: list[Ms]  # S_k, fitted
    h_ms: list[Ms]  # H_k of the intermediate exits, fitted
    boundary_ms: Ms  # D
    loop_ms: Ms  # L
    call_ms: Ms = 0.0  # P
    answer_ms: Ms = 0.0  # A
    noise: Ms  # the profile's own noise at this batch (relative)
    loo: dict[str, Ms]  # leave-one-out relative error of each cumulative entry
    residual: Ms  # the fit's largest relative residual over all entries
    entries: dict[str, Ms] = Field(default_factory=dict)  # the profile's p50 of every entry fitted (to refit, to check)

    def static(self, k: int) -> float:
        """A plain call of the network truncated at k: measured (the profile times it as a plain call), else
        its fitted bare call and P."""
        v = self.static_ms[k]
        return float(v) if v is not None else float(self.s_ms[k]) + self.call_ms

    def run(self, prev: int, k: int) -> float:
        """One segment run from exit `prev` (exclusive) up to exit `k`, head included, inside the exit loop."""
        return self.s_ms[k] - self.s_ms[prev] + self.h_ms[prev] + self.boundary_ms


class CostModel(_Model):
    """Latency of any exit subset with thresholds, per profiled batch size; stamped like the profile it came from."""

    format: str = FORMAT
    num_exits: Annotated[int, Field(ge=1)]
    exit_names: list[str]
    ends_at_final: bool  # the profiled bundle's last exit is the original final exit
    batches: list[BatchFit] = Field(min_length=1)  # ascending batch size
    backend: str
    device: str
    target: str | None = None
    host: str | None = None
    bundle_checksum: str | None = None
    provenance: dict = Field(default_factory=dict)
    trusted: bool = True  # the profile's own verdict on its noise
    stated_error: Ms = 0.0  # the worst leave-one-out relative error of the exit loop's entries, over batch sizes

    # --- persistence

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)

    @classmethod
    def from_json(cls, text: str) -> "CostModel":
        try:
            return cls.model_validate_json(text)
        except ValueError as err:
            raise ConfigError("not a cost model", got=str(err).splitlines()[0][:200], expected=FORMAT,
                              hint="fit it again from the run's profile.json") from None

    def save(self, path: Path) -> None:
        """Written atomically (a reader never sees half a model)."""
        write_atomic(Path(path), self.to_json() + "\n")

    @classmethod
    def load(cls, path: Path) -> "CostModel":
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise ConfigError("cannot read the cost model", got=f"{path}: {err.strerror}", expected=f"a {FILE}",
                              hint="fit it from the run's profile (edgeexit profile, then the build)") from None
        return cls.from_json(text)

    def check_bundle(self, checksum: str) -> None:
        """Refuse a model fitted on another bundle's profile (as a stale profile is refused)."""
        if self.bundle_checksum != checksum:
            raise DeviceError("the cost model was fitted on another bundle's profile", got=self.bundle_checksum,
                              expected=checksum, hint="profile the unpruned bundle again and refit")

    # --- what it states

    def error(self) -> float:
        """The error the model states: its worst leave-one-out relative error (0 when nothing could be left out)."""
        return self.stated_error

    def noise(self) -> float:
        """The profile's own noise: the largest over batch sizes."""
        return max(b.noise for b in self.batches)

    @property
    def batch_sizes(self) -> list[int]:
        return [b.batch for b in self.batches]

    # --- predictions

    def _check(self, exits: Sequence[int]) -> list[int]:
        ks = [int(k) for k in exits]
        if not ks or ks != sorted(set(ks)) or ks[0] < 0 or ks[-1] >= self.num_exits:
            raise ConfigError("an exit subset must be sorted, distinct exit indices", got=list(exits),
                              expected=f"a non-empty ascending subset of 0..{self.num_exits - 1}")
        return ks

    def _check_batch(self, batch: int) -> int:
        lo, hi = self.batches[0].batch, self.batches[-1].batch
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or not 1 <= batch <= hi:
            raise ConfigError("operating batch size outside what was profiled", got=batch, expected=f"1..{hi}",
                              hint=f"profile at that batch size too (profiled: {self.batch_sizes}; below {lo} the "
                                   "smallest is scaled)")
        return int(batch)

    def _interp(self, values: Sequence[float], n: float) -> float:
        """A per-call time known at each profiled batch size, at live batch n (linear; below the smallest: scaled)."""
        sizes = self.batch_sizes
        if n <= 0:
            return 0.0
        if n < sizes[0]:
            return values[0] * n / sizes[0]
        return float(np.interp(n, sizes, values))

    def static_ms(self, k: int, batch: int = 1) -> float:
        """A plain call of the network truncated at exit k, as a one-segment bundle runs it: measured as such (at
        the last exit of an unpruned profile: the unsplit model, measured)."""
        batch = self._check_batch(batch)
        if k == self.num_exits - 1 and self.ends_at_final:
            return self._interp([b.full_ms for b in self.batches], batch)
        return self._interp([b.static(k) for b in self.batches], batch)

    def full_ms(self, batch: int = 1) -> float:
        return self._interp([b.full_ms for b in self.batches], self._check_batch(batch))

    def run_times(self, exits: Sequence[int], batch: int = 1) -> tuple[float, list[list[float]]]:
        """(T_1 at `batch`, for each later run its time at every profiled batch size): what `predict` interpolates."""
        ks = self._check(exits)
        first = self._interp([b.s_ms[ks[0]] + b.loop_ms for b in self.batches], self._check_batch(batch))
        runs = [[b.run(p, k) for b in self.batches] for p, k in zip(ks, ks[1:])]
        return first, runs

    def _answers(self) -> list[float]:
        """A at every profiled batch size."""
        return [b.answer_ms for b in self.batches]

    def predict(self, exits: Sequence[int], reach: Sequence[float] | None = None, batch: int = 1) -> float:
        """Expected ms per call of a `batch` for the deployment keeping `exits`, where `reach[i]` is the fraction of
        samples that reach run i (reach[0] = 1; default: everyone reaches every run, i.e. forced to the last)."""
        ks = self._check(exits)
        batch = self._check_batch(batch)
        if len(ks) == 1:
            return self.static_ms(ks[0], batch)
        p = np.ones(len(ks)) if reach is None else np.asarray(reach, dtype=np.float64)
        if p.shape != (len(ks),) or not np.isfinite(p).all() or (p < 0).any() or (p > 1 + 1e-9).any():
            raise ConfigError("reach fractions must be one value in [0, 1] per kept exit", got=list(np.atleast_1d(p)),
                              expected=f"{len(ks)} values")
        first, runs = self.run_times(ks, batch)
        leave = p[:-1] - p[1:]  # the share leaving through each test: every kept exit's but the last
        answers = self._answers()
        return first + sum(self._interp(r, batch * float(pi)) for r, pi in zip(runs, p[1:])) + \
            sum(self._interp(answers, batch * float(q)) for q in leave)

    def forced_ms(self, exits: Sequence[int], batch: int = 1) -> float:
        """The exit loop over `exits` with every sample answering at the last, the earlier kept exits tested: what
        the profile's `cumulative` entries time for exits 0..k (one exit: the loop around a single segment; a
        one-segment bundle does not run it, see `predict`)."""
        first, runs = self.run_times(exits, batch)
        return first + sum(self._interp(r, float(batch)) for r in runs)

    def linear(self, exits: Sequence[int], batch: int = 1) -> tuple[float, np.ndarray]:
        """A linear stand-in for `predict` that the search optimises: (constant, cumulative per-sample cost [m]) with
        predict ~ constant + mean over samples of cost[run that answers]. Exact at batch 1, and at batch b whenever
        every live batch b P_i is >= 1 and b lies within one interpolation piece; above `predict` otherwise."""
        ks = self._check(exits)
        batch = self._check_batch(batch)
        if len(ks) == 1:
            return self.static_ms(ks[0], batch), np.zeros(1)
        first, runs = self.run_times(ks, batch)
        const, slopes = first, []
        for r in runs + [self._answers()] * (len(ks) - 1):
            t1, tb = self._interp(r, 1.0), self._interp(r, float(batch))
            if batch == 1:
                slopes.append(t1)  # T(P) = P T(1)
            else:  # the chord through live batches 1 and b: T(n) = alpha + beta n
                beta = (tb - t1) / (batch - 1)
                const += t1 - beta
                slopes.append(beta * batch)
        # a run's time is paid by everyone reaching it (cumulative); A only by those leaving through that run's test
        steps, leave = slopes[:len(runs)], slopes[len(runs):]
        return const, np.concatenate(([0.0], np.cumsum(steps))) + np.append(leave, 0.0)


# ---------------------------------------------------------------------------------------------------
# fitting


def _p50(entry: dict | None) -> float | None:
    return None if entry is None else float(entry["p50_ms"])


def _has_a(table: dict) -> bool:
    """Whether A is fitted: some exit was timed answering through its test."""
    return any(e.get("answer") is not None for e in table["exits"])


def _has_p(table: dict, ends_at_final: bool) -> bool:
    """Whether P is fitted: some entry is a plain call (a static, or `full` when the last exit is the final one)."""
    return ends_at_final or any(e.get("static") is not None for e in table["exits"])


def _equations(table: dict, num_exits: int, ends_at_final: bool) -> list[tuple[str, np.ndarray, float]]:
    """(name, coefficients over [S_0..S_{E-1}, H_0..H_{E-2}, D, L(, P)(, A)], measured ms) of every entry of one batch
    table; P when some entry is a plain call (`_has_p`: static_k = S_k + P, and `full` = S_{E-1} + P when the
    profile's last exit is the original final one), A when some exit was timed answering through its test."""
    E = num_exits
    has_p, has_a = _has_p(table, ends_at_final), _has_a(table)
    n_params = 2 * E + 1 + has_p + has_a
    iS, iH, iD, iL, iP = 0, E, 2 * E - 1, 2 * E, 2 * E + 1
    iA = iP + has_p

    def row() -> np.ndarray:
        return np.zeros(n_params)

    out = []
    exits = table["exits"]
    for k, e in enumerate(exits):
        if (v := _p50(e.get("static"))) is not None:
            a = row()
            a[iS + k] = 1
            a[iP] = 1
            out.append((f"static{k}", a, v))
        if k < E - 1 and (v := _p50(e.get("head"))) is not None:
            a = row()
            a[iH + k] = 1
            out.append((f"head{k}", a, v))
        if (v := _p50(e.get("segment"))) is not None:
            a = row()
            a[iS + k] = 1
            if k:
                a[iS + k - 1] = -1
                a[iH + k - 1] = 1
            out.append((f"segment{k}", a, v))
        a = row()
        a[iS + k] = 1
        a[iH:iH + k] = 1
        a[iD] = k
        a[iL] = 1
        out.append((f"cumulative{k}", a, float(e["cumulative"]["p50_ms"])))
        if k < E - 1 and (v := _p50(e.get("answer"))) is not None:
            a = a.copy()
            a[iA] = 1
            out.append((f"answer{k}", a, v))
    if ends_at_final:
        a = row()
        a[iS + E - 1] = 1
        a[iP] = 1
        out.append(("full", a, float(table["full"]["p50_ms"])))
    return out


def _in_loop(name: str) -> bool:
    """An entry timed through the exit loop: what deployments are made of."""
    return name.startswith(("cumulative", "answer"))


def _weight(name: str) -> float:
    return LOOP_WEIGHT if _in_loop(name) else 1.0


def _solve(eqs: list[tuple[str, np.ndarray, float]], n_params: int) -> np.ndarray | None:
    """Weighted least squares (each row / its measurement, the loop's entries LOOP_WEIGHT times); None when the rows
    do not determine every parameter."""
    w = np.array([_weight(name) for name, _, _ in eqs])
    A = np.array([a / max(v, 1e-12) for _, a, v in eqs]) * w[:, None]
    y = w
    if np.linalg.matrix_rank(A) < n_params:
        return None
    return np.linalg.lstsq(A, y, rcond=None)[0]


def fit_batch(table: dict, batch: int, num_exits: int, ends_at_final: bool) -> BatchFit:
    E = num_exits
    eqs = _equations(table, E, ends_at_final)
    n_params = eqs[0][1].size  # with P where `_has_p`, A where `_has_a`: read back from the equations
    has_a = any(name.startswith("answer") for name, _, _ in eqs)
    has_p = n_params > 2 * E + 1 + has_a
    theta = _solve(eqs, n_params)
    if theta is None:
        raise DeviceError("the profile does not determine a cost model", got=f"entries {[n for n, _, _ in eqs]}",
                          expected="static, head, segment and cumulative times of every exit",
                          hint="profile the unpruned bundle with the Python runner (edgeexit profile)")
    residual = max(abs(float(a @ theta) / v - 1) for _, a, v in eqs)
    loo = {}
    for i, (name, a, v) in enumerate(eqs):
        if not _in_loop(name):  # statics and the unsplit model are measured, not predicted
            continue
        rest = _solve(eqs[:i] + eqs[i + 1:], n_params)
        if rest is not None:  # an entry the others cannot stand in for is not predicted (and not counted)
            loo[name] = abs(float(a @ rest) / v - 1)
    noise = table.get("noise", {}).get("noise")
    return BatchFit(batch=batch,
                    static_ms=[_p50(e.get("static")) for e in table["exits"]], full_ms=float(table["full"]["p50_ms"]),
                    s_ms=theta[:E].tolist(), h_ms=theta[E:2 * E - 1].tolist(), boundary_ms=float(theta[2 * E - 1]),
                    loop_ms=float(theta[2 * E]), call_ms=float(theta[2 * E + 1]) if has_p else 0.0,
                    answer_ms=float(theta[-1]) if has_a else 0.0,
                    noise=float(noise) if noise is not None and math.isfinite(noise) else 0.0,
                    loo=loo, residual=residual, entries={name: v for name, _, v in eqs})


def fit_cost_model(profile: dict) -> CostModel:
    """The cost model of a profile (the dict `edgeexit.profile.profile_bundle` returns, or RUN/profile.json)."""
    batches = profile.get("batches") if isinstance(profile, dict) else None
    if not batches:
        raise DeviceError("the profile has no per-batch tables", got=sorted(profile)[:12] if isinstance(profile, dict) else type(profile).__name__,
                          expected=f"a profile with 'batches' ({'edgeexit-profile/2'})",
                          hint="profile the bundle again with this edgeexit (edgeexit profile RUN/bundle)")
    sizes = sorted(batches, key=int)
    first = batches[sizes[0]]["exits"]
    E = len(first)
    names = [e["name"] for e in first]
    # the last exit of an unpruned bundle is the final classifier: its truncation is the unsplit model itself
    ends_at_final = first[-1].get("static") is None and float(first[-1].get("macs_fraction", 1.0)) >= END_FRACTION
    fits = []
    for b in sizes:
        table = batches[b]
        if [e["name"] for e in table["exits"]] != names:
            raise DeviceError("the profile's batch tables list different exits", got=b, expected=names)
        fits.append(fit_batch(table, int(b), E, ends_at_final))
    prov = profile.get("provenance") or {}
    return CostModel(num_exits=E, exit_names=names, ends_at_final=ends_at_final, batches=fits,
                     backend=str(profile.get("backend")), device=str(profile.get("device", "local")),
                     target=profile.get("target"), host=profile.get("host"),
                     bundle_checksum=prov.get("bundle_checksum"), provenance=dict(prov),
                     trusted=bool(profile.get("trusted", True)),
                     stated_error=max((v for f in fits for v in f.loo.values()), default=0.0))


def read_cost_model(text_or_dict: str | dict) -> CostModel:
    """A stored cost model (its JSON text or parsed dict)."""
    return CostModel.from_json(text_or_dict if isinstance(text_or_dict, str) else json.dumps(text_or_dict))
