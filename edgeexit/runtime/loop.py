"""The early-exit runtime: run segment k on the live batch, score, write exiting samples to their output
slots, compact the batch to the samples still running, go on. The last exit always answers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgeexit.bundle import Bundle, load_bundle
from edgeexit.errors import ConfigError, ShapeError
from edgeexit.runtime.backends import BACKENDS, OrtSegment, SegmentRunner, TorchSegment


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


class EarlyExitRuntime:
    """Runs an early-exit network split into segments on any backend with the same exit loop.

    Not thread-safe: each runner owns its output buffers. Use one runtime per thread.
    """

    def __init__(self, segments: Sequence[SegmentRunner], thresholds: Sequence[float], cumulative_macs: Sequence[int],
                 input_shape: Sequence[int], num_classes: int, ensemble_weights: Sequence[float] | None = None):
        if not (len(segments) == len(thresholds) == len(cumulative_macs)):
            raise ConfigError("segments, thresholds and costs differ in length",
                              got=(len(segments), len(thresholds), len(cumulative_macs)), expected="one of each per exit",
                              hint="rebuild the bundle")
        self.segments = list(segments)
        self.thresholds = [float(t) for t in thresholds]
        self.thresholds[-1] = -math.inf  # the final exit always answers
        self.cumulative_macs = np.asarray(cumulative_macs, dtype=np.int64)
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.ensemble_weights = None if ensemble_weights is None else [float(w) for w in ensemble_weights]
        if self.ensemble_weights is not None and len(self.ensemble_weights) != len(self.segments):
            raise ConfigError("one ensemble weight per exit is needed", got=len(self.ensemble_weights),
                              expected=len(self.segments), hint="rebuild the bundle")

    @property
    def num_exits(self) -> int:
        return len(self.segments)

    @classmethod
    def from_bundle(cls, bundle: Bundle | str | Path, backend: str = "onnxruntime", *, threads: int | None = None,
                    spinning: bool = False) -> "EarlyExitRuntime":
        """Load every segment of a (verified) bundle into `backend`."""
        b = bundle if isinstance(bundle, Bundle) else load_bundle(Path(bundle))
        if backend != "onnxruntime":
            raise ConfigError("backend cannot run this bundle", got=backend, expected="onnxruntime for ONNX bundles",
                              hint=f"backends: {', '.join(BACKENDS)}; the torch backend runs a checkpoint (from_net)")
        runners = [OrtSegment(b.path(e["segment"]), e["output_shapes"], threads=threads, spinning=spinning) for e in b.exits]
        ensemble = b.manifest.get("ensemble") or {}
        return cls(runners, b.thresholds, [e["cumulative_macs"] for e in b.exits], b.input_shape,
                   len(b.manifest["class_names"]), ensemble.get("weights"))

    @classmethod
    def from_net(cls, net, score_fn, thresholds: Sequence[float], cumulative_macs: Sequence[int],
                 input_shape: Sequence[int], num_classes: int) -> "EarlyExitRuntime":
        """The torch reference backend over an EarlyExitNet."""
        runners = [TorchSegment(net.exit_segment(k, score_fn)) for k in range(net.num_exits)]
        return cls(runners, thresholds, cumulative_macs, input_shape, num_classes)

    def with_thresholds(self, thresholds: Sequence[float]) -> "EarlyExitRuntime":
        """The same loaded segments with other thresholds (e.g. all +inf to force the final exit)."""
        return EarlyExitRuntime(self.segments, thresholds, self.cumulative_macs, self.input_shape, self.num_classes,
                                self.ensemble_weights)

    def check_input(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise ShapeError("input is not a numpy array", got=type(x).__name__, expected="np.ndarray float32 NCHW",
                             hint="convert with np.asarray(x, dtype=np.float32)")
        if x.dtype != np.float32:
            raise ShapeError("input has the wrong dtype", got=str(x.dtype), expected="float32",
                             hint="normalise images as the manifest's input section says, then .astype(np.float32)")
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape or x.shape[0] == 0:
            raise ShapeError("input has the wrong shape", got=tuple(x.shape), expected=f"(N>=1, {', '.join(map(str, self.input_shape))})",
                             hint="resize to the bundle's input size and use NCHW layout")
        if not np.isfinite(x).all():
            raise ShapeError("input holds NaN or inf", got=f"{int((~np.isfinite(x)).sum())} non-finite values",
                             expected="finite values", hint="check the preprocessing of these images")
        return np.ascontiguousarray(x)

    def run(self, x: np.ndarray) -> RunResult:
        x = self.check_input(x)
        n = x.shape[0]
        logits_out = np.empty((n, self.num_classes), np.float32)
        exit_out = np.empty(n, np.int64)
        live = np.arange(n)  # output slot of every sample still running
        last = self.num_exits - 1
        for k, (segment, threshold) in enumerate(zip(self.segments, self.thresholds)):
            outs = segment.run(x)
            if k == last:
                logits_out[live] = outs[0]
                exit_out[live] = k
                break
            features, logits = outs[0], outs[1]
            if threshold == math.inf:  # this exit can never answer: skip scoring
                x = features
                continue
            if len(live) == 1:  # one sample (the on-device case): a scalar compare beats numpy's mask machinery
                if outs[2][0] >= threshold:
                    logits_out[live[0]] = logits[0]
                    exit_out[live[0]] = k
                    break
                x = features
                continue
            done = outs[2] >= threshold
            if done.all():
                logits_out[live] = logits
                exit_out[live] = k
                break
            if done.any():
                logits_out[live[done]] = logits[done]
                exit_out[live[done]] = k
                keep = ~done
                live = live[keep]
                x = features[keep]  # compaction: the only copy in the loop
            else:
                x = features
        return RunResult(logits_out.argmax(1), exit_out, logits_out, self.cumulative_macs[exit_out])

    def run_ensemble(self, x: np.ndarray) -> RunResult:
        """AEP's "no early stop" mode (papers/000, Eq. 3): every sample runs every segment and the answer is
        argmax Σ β_i·O_i over the bundle's exits, with the β the bundle was trained / pruned with."""
        if self.ensemble_weights is None:
            raise ConfigError("this runtime has no ensemble weights", got=None, expected="β per exit",
                              hint="bundles record them under manifest 'ensemble'; pass ensemble_weights=")
        x = self.check_input(x)
        total = np.zeros((x.shape[0], self.num_classes), np.float32)
        for k, (segment, beta) in enumerate(zip(self.segments, self.ensemble_weights)):
            outs = segment.run(x)
            total += beta * (outs[0] if k == self.num_exits - 1 else outs[1])
            x = outs[0]
        last = np.full(len(total), self.num_exits - 1, np.int64)
        return RunResult(total.argmax(1), last, total, self.cumulative_macs[last])
