"""Evaluation of a bundle: accuracy, exit histogram, MACs and wall time of the early-exit runtime against the
unsplit model, both on the same backend, on a split of the data the bundle was trained on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeexit.bundle import Bundle, load_bundle
from edgeexit.errors import ConfigError
from edgeexit.measure import side_by_side
from edgeexit.runtime import EarlyExitRuntime, RunResult


def test_split(bundle: Bundle, split: str = "test", limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels of a split of the data the bundle was trained on."""
    from edgeexit.outputs import dataset_arrays  # torch and the datasets: only when a split is read
    from edgeexit.pipeline import DataConfig

    data = DataConfig(**bundle.manifest.data)
    splits = data.load(bundle.manifest.input.shape[0])
    dataset = {"test": splits.test, "val": splits.val, "train": splits.train}.get(split)
    if dataset is None:
        raise ConfigError("unknown split", got=split, expected="test, val or train")
    return dataset_arrays(dataset, limit)


def evaluate_bundle(bundle: Bundle | Path, *, backend: str | None = None, split: str = "test", batch_size: int = 64,
                    limit: int | None = None, repeats: int = 3, time_batches: int | None = None,
                    threads: int | None = None, single_samples: int = 300) -> dict:
    """Accuracy, exit histogram, MACs and wall time of the early-exit runtime vs the unsplit model, both on the same
    backend (default: the one the bundle's target runs on). A verified `Bundle` is used as it is (a build passes
    the one it just wrote); a path is verified first."""
    for name, value in (("batch_size", batch_size), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ConfigError(f"{name} must be an integer >= 1", got=value, expected="e.g. 64")
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(Path(bundle))
    x, y = test_split(bundle, split, limit)
    runtime = EarlyExitRuntime.open(bundle, backend, threads=threads)
    full = runtime.reference()
    ee_preds, ee_exits, full_preds = [], [], []
    for i in range(0, len(x), batch_size):
        r = runtime.run(x[i:i + batch_size])
        ee_preds.append(r.predictions)
        ee_exits.append(r.exit_index)
        full_preds.append(full.run(x[i:i + batch_size]).argmax(1))
    ee_preds, ee_exits, full_preds = map(np.concatenate, (ee_preds, ee_exits, full_preds))
    # each exit alone on every sample (the static truncations' accuracy, for the report's baseline)
    exit_correct = np.zeros(len(bundle.exits), np.int64)
    for i in range(0, len(x), batch_size):
        for k, o in enumerate(runtime.exit_outputs(x[i:i + batch_size])):
            exit_correct[k] += int((o["logits"].argmax(1) == y[i:i + batch_size]).sum())
    cum = np.array([e.cumulative_macs for e in bundle.exits], dtype=np.float64)
    runs = {"early_exit": runtime.run, "full": full.run}
    timing = side_by_side(runs, x, batch_size, repeats=repeats, max_batches=time_batches)
    by_batch = {str(batch_size): timing.ratio("early_exit", "full")}
    if batch_size != 1 and single_samples:  # per-call overhead shows at batch 1: measure it too
        one = side_by_side(runs, x[:single_samples], 1, repeats=repeats, max_batches=time_batches)
        by_batch = {"1": one.ratio("early_exit", "full"), **by_batch}
    n_exits = len(bundle.exits)
    full_macs = bundle.manifest.full_macs
    return {
        "bundle": str(bundle.root), "bundle_checksum": bundle.manifest.checksum,
        "bundle_content_sha256": bundle.manifest.content_sha256, "backend": runtime.backend.name,
        "split": split, "samples": int(len(y)),
        "batch_size": batch_size,
        "full_accuracy": float((full_preds == y).mean()),
        "early_exit_accuracy": float((ee_preds == y).mean()),
        "exit_histogram": RunResult.histogram(ee_exits, n_exits),
        "exit_accuracy": (exit_correct / max(1, len(y))).tolist(),
        "exit_names": [e.name for e in bundle.exits],
        "mean_macs": float(cum[ee_exits].mean()),
        "full_macs": int(full_macs),
        "macs_fraction": float(cum[ee_exits].mean() / full_macs),
        "latency_fraction": timing.ratio("early_exit", "full"),
        "latency_fraction_by_batch": by_batch,
        "per_image_ms": {k: timing.per_image_ms(k) for k in timing.seconds},
        "timed_batches": len(timing.seconds["full"]),
        "agreement_with_full": float((ee_preds == full_preds).mean()),
    }
