"""The early-exit runtime: run segment k on the live batch, score, write exiting samples to their output slots,
compact the batch to the samples still running, go on. The last exit always answers.

The same loop drives every backend through the contract in `edgeexit.runtime.backend`; it never looks inside an
array: the backend says which samples exit (the only data that comes back to the host), gathers the survivors and
scatters the exiting logits on its own device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeexit.bundle import Bundle, load_bundle
from edgeexit.errors import BundleError, ConfigError, ShapeError
from edgeexit.runtime.backend import (
    Backend,
    Segment,
    default_backend,
    make_backend,
    segment_file,
)

FEATURES, LOGITS, SCORE = "features", "logits", "score"


@dataclass
class RunResult:
    """Per sample: the predicted class, the exit that answered, its logits, and the MACs spent."""

    predictions: np.ndarray  # [N] int64
    exit_index: np.ndarray  # [N] int64
    logits: np.ndarray  # [N, C] float32
    macs: np.ndarray  # [N] int64

    def exit_histogram(self, num_exits: int) -> list[int]:
        return self.histogram(self.exit_index, num_exits)

    @staticmethod
    def histogram(exit_index: np.ndarray, num_exits: int) -> list[int]:
        """How many samples each exit answered."""
        return np.bincount(exit_index, minlength=num_exits).tolist()


def check_input(x: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    """A contiguous float32 NCHW batch of the bundle's sample shape, finite; a ShapeError otherwise."""
    if not isinstance(x, np.ndarray):
        raise ShapeError("input is not a numpy array", got=type(x).__name__, expected="np.ndarray float32 NCHW",
                         hint="convert with np.asarray(x, dtype=np.float32)")
    if x.dtype != np.float32:
        raise ShapeError("input has the wrong dtype", got=str(x.dtype), expected="float32",
                         hint="normalise images as the manifest's input section says, then .astype(np.float32)")
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(input_shape) or x.shape[0] == 0:
        raise ShapeError("input has the wrong shape", got=tuple(x.shape), expected=f"(N>=1, {', '.join(map(str, input_shape))})",
                         hint="resize to the bundle's input size and use NCHW layout")
    if not math.isfinite(x.sum()):  # one pass, no temporary mask; NaN and inf make the sum non-finite
        bad = int((~np.isfinite(x)).sum())
        if bad:  # (a finite batch can only overflow the sum with values near 1e38: not images)
            raise ShapeError("input holds NaN or inf", got=f"{bad} non-finite values", expected="finite values",
                             hint="check the preprocessing of these images")
    return np.ascontiguousarray(x)


def check_threshold(t: object, k: int) -> float | None:
    """An exit rule as the loop runs it: None (never exits there; +inf means the same), -inf (always exits there:
    `forced`), or a finite number, rounded to float32 as the scores are, so every backend (numpy, torch, the C++
    runner) compares the same two float32 values. NaN, strings and booleans are a ConfigError."""
    if t is None:
        return None
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (int, float, np.integer, np.floating)):
        raise ConfigError(f"threshold of exit {k} is not a number", got=repr(t)[:80], expected="a finite number or None",
                          hint="calibrate again: edgeexit calibrate")
    t = float(t)
    if math.isnan(t):
        raise ConfigError(f"threshold of exit {k} is NaN", got=t, expected="a finite number or None",
                          hint="calibrate again: edgeexit calibrate")
    if t == math.inf:
        return None
    if t == -math.inf:
        return t
    if abs(t) > float(np.finfo(np.float32).max):  # beyond float32: no float32 score reaches it (or every one does)
        return None if t > 0 else -math.inf
    return float(np.float32(t))


def nonfinite_error(where: str, sample: int, what: str = "logits") -> ShapeError:
    return ShapeError(f"{where} gave non-finite {what} (NaN or inf) for sample {sample}", got=f"sample {sample}",
                      expected="finite outputs", hint="the input is finite but too large for float32 arithmetic inside "
                      "the network (e.g. |x| near 3e38 overflows); check the preprocessing: inputs are normalised images")


class ModelRunner:
    """One whole graph (the unsplit reference model) on a backend: x -> logits."""

    def __init__(self, backend: Backend, segment: Segment, input_shape: Sequence[int], max_batch: int):
        self.backend, self.segment = backend, segment
        self.input_shape, self.max_batch = tuple(input_shape), max_batch
        self._in = segment.inputs[0].name

    def run(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, self.input_shape)
        parts = []
        for s in range(0, len(x), self.max_batch):
            out = self.segment.run({self._in: self.backend.upload(x[s:s + self.max_batch])})[LOGITS]
            parts.append(np.array(self.backend.download(out)))
        logits = parts[0] if len(parts) == 1 else np.concatenate(parts)
        bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
        if len(bad):
            raise nonfinite_error("the reference model", int(bad[0]))
        return logits


class EarlyExitRuntime:
    """Runs an early-exit bundle on one backend with the exit loop above.

    `thresholds[k]` is the exit rule at exit k (exit when score >= it); None: never exits there. The last exit
    always answers. Not thread-safe: segments own their output buffers. Use one runtime per thread.
    """

    def __init__(self, backend: Backend, segments: Sequence[Segment], thresholds: Sequence[float | None],
                 cumulative_macs: Sequence[int], input_shape: Sequence[int], num_classes: int, max_batch: int, *,
                 ensemble_weights: Sequence[float] | None = None, reference: Segment | None = None,
                 exit_names: Sequence[str] | None = None, fused: Segment | None = None):
        if not (len(segments) == len(thresholds) == len(cumulative_macs)) or not segments:
            raise ConfigError("segments, thresholds and costs differ in length",
                              got=(len(segments), len(thresholds), len(cumulative_macs)), expected="one of each per exit",
                              hint="rebuild the bundle")
        self.backend = backend
        self.segments = list(segments)
        self.thresholds = [check_threshold(t, k) for k, t in enumerate(thresholds)]
        self.thresholds[-1] = None  # the final exit always answers
        self.cumulative_macs = np.asarray(cumulative_macs, dtype=np.int64)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.max_batch = max_batch
        self.ensemble_weights = None if ensemble_weights is None else [float(w) for w in ensemble_weights]
        if self.ensemble_weights is not None and len(self.ensemble_weights) != len(self.segments):
            raise ConfigError("one ensemble weight per exit is needed", got=len(self.ensemble_weights),
                              expected=len(self.segments), hint="rebuild the bundle")
        if self.ensemble_weights is not None and not all(math.isfinite(w) for w in self.ensemble_weights):
            raise ConfigError("ensemble weights must be finite", got=self.ensemble_weights, expected="finite numbers",
                              hint="rebuild the bundle")
        self.exit_names = list(exit_names) if exit_names is not None else [f"exit{k}" for k in range(len(segments))]
        self._reference = reference
        # the bundle's batch-1 form (manifest `fused`): one program that runs the whole loop for a sample alone
        self._fused = fused if len(self.segments) > 1 else None
        self._fused_rule: np.ndarray | None = None  # its thresholds input, made on first use
        self._inputs = [s.inputs[0].name for s in self.segments]
        self._gather: dict[int, object] = {}  # exit k -> the buffer survivors of exit k are gathered into
        self._answer_at: int | None = None  # forced(k): every sample answers at k
        # when a list: what the loop executes, "segmentK" per segment run and "testK" per exit test (the profile
        # records it; the C++ runner writes the same names)
        self.trace: list[str] | None = None

    @property
    def num_exits(self) -> int:
        return len(self.segments)

    @classmethod
    def open(cls, bundle: Bundle | str | Path, backend: str | Backend | None = None, *,
             threads: int | None = None) -> "EarlyExitRuntime":
        """Every segment of a (verified) bundle on `backend` (default: the one its target runs on)."""
        b = bundle if isinstance(bundle, Bundle) else load_bundle(Path(bundle))
        be = backend if backend is not None and not isinstance(backend, str) else \
            make_backend(backend or default_backend(b), threads=threads)
        if be.format not in b.manifest.formats:
            raise BundleError(f"the {be.name} backend runs {be.format} files; this bundle holds none",
                              got=b.manifest.formats, expected=be.format,
                              hint=f"pick a backend for {', '.join(b.manifest.formats)}, or re-export for a target with {be.format}")
        max_batch = b.manifest.batch.max
        segments = []
        for e in b.exits:
            path, ref = segment_file(b, e.segment, be.format, f"exit {e.index}")
            segments.append(be.open_segment(path, ref, e.inputs, e.outputs, max_batch))
        reference = None  # a deployable bundle (export --slim) may not ship the unsplit model: the exits need none
        if b.manifest.reference.segment:
            ref_path, ref_ref = segment_file(b, b.manifest.reference.segment, be.format, "the reference model")
            reference = be.open_segment(ref_path, ref_ref, b.manifest.reference.inputs, b.manifest.reference.outputs,
                                        max_batch)
        fused = None
        if b.manifest.fused is not None and be.format in b.manifest.fused.segment:
            path, ref = segment_file(b, b.manifest.fused.segment, be.format, "the batch-1 form")
            fused = be.open_segment(path, ref, b.manifest.fused.inputs, b.manifest.fused.outputs, 1)
        ensemble = b.manifest.ensemble
        return cls(be, segments, b.manifest.thresholds, [e.cumulative_macs for e in b.exits], b.input_shape,
                   len(b.manifest.class_names), max_batch, ensemble_weights=ensemble.weights if ensemble else None,
                   reference=reference, exit_names=[e.name for e in b.exits], fused=fused)

    def reference(self) -> ModelRunner:
        """The unsplit original model of the bundle on the same backend: the yardstick."""
        if self._reference is None:
            raise ConfigError("this runtime has no reference model (the unsplit network every saving is measured "
                              "against)", got="a deployable bundle (export --slim) or segments opened by hand",
                              expected="a development bundle, opened with EarlyExitRuntime.open",
                              hint="evaluate, profile and compare the development bundle (RUN/bundle); the deployable "
                              "one (RUN/bundle-slim) holds only what the device runs")
        return ModelRunner(self.backend, self._reference, self.input_shape, self.max_batch)

    def with_thresholds(self, thresholds: Sequence[float | None]) -> "EarlyExitRuntime":
        """The same loaded segments with other thresholds (e.g. all None to force the final exit)."""
        rt = EarlyExitRuntime(self.backend, self.segments, thresholds, self.cumulative_macs, self.input_shape,
                              self.num_classes, self.max_batch, ensemble_weights=self.ensemble_weights,
                              reference=self._reference, exit_names=self.exit_names, fused=self._fused)
        rt._gather = self._gather
        return rt

    @property
    def fused(self) -> bool:
        """Whether a sample alone runs the bundle's batch-1 form (one program) rather than the segment loop."""
        return self._fused is not None

    def segment_loop(self) -> "EarlyExitRuntime":
        """The same runtime with every batch, one sample too, through the segment loop (what the batch-1 form
        replaces; benchmarks time both)."""
        rt = self.with_thresholds(self.thresholds)
        rt._fused, rt._answer_at = None, self._answer_at
        return rt

    def forced(self, k: int) -> "EarlyExitRuntime":
        """Every sample answers at exit k: segments 0..k run, and the exit tests of the earlier exits that have a
        threshold run too, but nobody leaves there (a sample that answers at k in the real loop paid for those
        tests: on a GPU backend each is a device-to-host copy and a sync); no test at k itself. The time of this run
        is the profile's `exit{k}`; the C++ runner's ee_run_forced does the same work."""
        if not 0 <= k < self.num_exits:
            raise ConfigError(f"no exit {k}", got=k, expected=f"0 <= k < {self.num_exits}")
        rt = self.with_thresholds(self.thresholds)
        rt._answer_at = k
        return rt

    def answering(self, k: int) -> "EarlyExitRuntime":
        """Every sample answers at exit k through k's exit test, as a sample leaving there does in the real loop: the
        earlier exits that have a threshold are tested and nobody passes them (their threshold is float32's largest),
        k's test passes everyone. Not the last exit (it answers without a test). Its time is the profile's
        `answer{k}`: `exit{k}` plus what leaving by a test costs; the C++ runner's run_answering does the same work."""
        if not 0 <= k < self.num_exits - 1:
            raise ConfigError(f"exit {k} has no exit test to answer by", got=k,
                              expected=f"0 <= k < {self.num_exits - 1}")
        top = float(np.finfo(np.float32).max)
        thresholds = [None if t is None else top for t in self.thresholds[:k]] + [-math.inf]
        return self.with_thresholds(thresholds + [None] * (self.num_exits - k - 1))

    def check_input(self, x: np.ndarray) -> np.ndarray:
        return check_input(x, self.input_shape)

    def run(self, x: np.ndarray) -> RunResult:
        x = self.check_input(x)
        n = x.shape[0]
        logits = np.empty((n, self.num_classes), np.float32)
        exits = np.empty(n, np.int64)
        for s in range(0, n, self.max_batch):
            self._run_chunk(x[s:s + self.max_batch], logits[s:s + self.max_batch], exits[s:s + self.max_batch], s)
        # a NaN logit argmaxes to class 0: never a silent answer (one pass over [N, C], noise beside the network)
        bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
        if len(bad):
            i = int(bad[0])
            raise nonfinite_error(self._exit_label(int(exits[i])), i)
        return RunResult(logits.argmax(1), exits, logits, self.cumulative_macs[exits])

    def _exit_label(self, k: int) -> str:
        return f"exit {k} ({self.exit_names[k]})"

    def _gather_buffer(self, k: int):
        buf = self._gather.get(k)
        if buf is None:
            spec = next(o for o in self.segments[k].outputs if o.name == FEATURES)
            buf = self._gather[k] = self.backend.empty((self.max_batch, *spec.sample_shape), spec.dtype)
        return buf

    def _run_chunk(self, x: np.ndarray, logits_out: np.ndarray, exits_out: np.ndarray, start: int = 0) -> None:
        be = self.backend
        if self._fused is not None and len(x) == 1:
            self._run_fused(x, logits_out, exits_out, start)
            return
        if self.num_exits == 1:
            # a static truncation: one plain call, nothing to score, scatter or compact (the loop's bookkeeping
            # would cost a tiny model as much again as the call itself)
            outs = self.segments[0].run({self._inputs[0]: be.upload(x)})
            if self.trace is not None:
                self.trace.append("segment0")
            logits_out[...] = be.download(outs[LOGITS])
            exits_out[...] = 0
            return
        result = be.upload(logits_out)
        live = None  # output row of every sample still running; None: all of them, in order (nothing exited yet)
        cur = be.upload(x)
        last = self.num_exits - 1
        trace = self.trace
        for k, segment in enumerate(self.segments):
            outs = segment.run({self._inputs[k]: cur})
            if trace is not None:
                trace.append(f"segment{k}")
            threshold = self.thresholds[k]
            if k == last or k == self._answer_at:
                be.scatter(result, live, outs[LOGITS], None)
                exits_out[slice(None) if live is None else live] = k
                break
            if threshold is None:  # never exits here: not even scored
                cur = outs[FEATURES]
                continue
            done = be.exit_flags(outs[SCORE], threshold)
            if trace is not None:
                trace.append(f"test{k}")
            n_done = int(np.count_nonzero(done))
            if n_done < len(done):  # a NaN score never exits (NaN >= t is false): find it rather than run on
                scored = be.exit_flags(outs[SCORE], -math.inf)
                if not scored.all():
                    row = int(np.flatnonzero(~scored)[0])
                    raise nonfinite_error(self._exit_label(k), start + int(row if live is None else live[row]), "score")
            if n_done == 0 or self._answer_at is not None:  # forced: tested, nobody leaves before the answer
                cur = outs[FEATURES]
                continue
            if n_done == len(done):
                be.scatter(result, live, outs[LOGITS], None)
                exits_out[slice(None) if live is None else live] = k
                break
            rows = np.flatnonzero(done)
            keep = np.flatnonzero(~done)
            slots = rows if live is None else live[rows]
            be.scatter(result, slots, outs[LOGITS], rows)
            exits_out[slots] = k
            live = keep if live is None else live[keep]
            cur = be.gather(outs[FEATURES], keep, self._gather_buffer(k))  # compaction
        got = be.download(result)
        if not np.may_share_memory(got, logits_out):
            logits_out[...] = got

    def _run_fused(self, x: np.ndarray, logits_out: np.ndarray, exits_out: np.ndarray, start: int) -> None:
        """One sample through the batch-1 form: the same tests as the loop, inside one program (its If nodes)."""
        be, fused = self.backend, self._fused
        if self._fused_rule is None:
            self._fused_rule = self._fused_thresholds()
        outs = fused.run({fused.inputs[0].name: be.upload(x), fused.inputs[1].name: self._fused_rule})
        k = int(be.download(outs["exit"])[0])
        if k < 0:  # -(k + 1): exit k's score was NaN (the graph lets it leave rather than run on)
            raise nonfinite_error(self._exit_label(-k - 1), start, "score")
        logits_out[...] = be.download(outs[LOGITS])
        exits_out[...] = k
        if self.trace is not None:  # what the program ran: every segment up to k, every test before it, k's own
            self.trace += [step for j in range(k) for step in (f"segment{j}", f"test{j}")] + [f"segment{k}"]
            self.trace += [f"test{k}"] if k < self.num_exits - 1 else []

    def _fused_thresholds(self) -> np.ndarray:
        """The batch-1 form's thresholds input: leave exit k when not score < t_k. None (never leaves): +inf;
        forced(k): +inf before k, -inf at k (the program tests every exit it passes, so exit{k} runs as answer{k})."""
        rule = [math.inf if t is None else t for t in self.thresholds[:-1]]
        if self._answer_at is not None:
            k = self._answer_at
            rule = [math.inf] * k + ([-math.inf] if k < len(rule) else []) + [math.inf] * (len(rule) - k - 1)
        return np.asarray(rule, np.float32)

    def exit_outputs(self, x: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Every exit's logits and score for every sample (no early exit): what `compare` and the ensemble read."""
        x = self.check_input(x)
        per_exit: list[dict[str, list]] = [{LOGITS: [], SCORE: []} for _ in self.segments]
        for s in range(0, len(x), self.max_batch):
            cur = self.backend.upload(x[s:s + self.max_batch])
            for k, segment in enumerate(self.segments):
                outs = segment.run({self._inputs[k]: cur})
                for name in (LOGITS, SCORE):
                    a = np.array(self.backend.download(outs[name]))
                    bad = np.flatnonzero(~np.isfinite(a.reshape(len(a), -1)).all(axis=1))
                    if len(bad):
                        raise nonfinite_error(self._exit_label(k), s + int(bad[0]), name)
                    per_exit[k][name].append(a)
                if k < self.num_exits - 1:
                    cur = outs[FEATURES]
        return [{name: np.concatenate(v) for name, v in d.items()} for d in per_exit]

    def run_ensemble(self, x: np.ndarray) -> RunResult:
        """AEP's "no early stop" mode (papers/000, Eq. 3): every sample runs every segment and the answer is
        argmax Σ β_i·O_i over the bundle's exits, with the β the bundle was trained / pruned with."""
        if self.ensemble_weights is None:
            raise ConfigError("this runtime has no ensemble weights", got=None, expected="β per exit",
                              hint="bundles record them under manifest 'ensemble'")
        outs = self.exit_outputs(x)
        total = sum(np.float32(beta) * o[LOGITS] for beta, o in zip(self.ensemble_weights, outs))
        last = np.full(len(total), self.num_exits - 1, np.int64)
        return RunResult(total.argmax(1), last, total, self.cumulative_macs[last])

    def close(self) -> None:
        self.backend.close()
