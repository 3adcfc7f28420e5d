"""`edgeexit predict`: image files through a bundle's early-exit runtime, one answer per image."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgeexit.bundle import load_bundle
from edgeexit.images import image_files, load_images


def predict_files(bundle_dir: Path, paths: Sequence[str | Path], backend: str | None = None) -> dict:
    """Per image: class, the exit that answered, its softmax score and the milliseconds of its own runtime call
    (batch 1, as a device answers one camera frame). The bundle is verified first, as always."""
    from edgeexit.runtime import EarlyExitRuntime

    bundle = load_bundle(Path(bundle_dir))
    files = image_files(paths)
    x = load_images(files, bundle.manifest)  # every file is read before anything runs: a bad one fails early
    runtime = EarlyExitRuntime.open(bundle, backend)
    names = bundle.manifest.class_names
    rows = []
    try:
        runtime.run(x[:1])  # warm-up: the first call pays for allocations, not for the image
        for path, sample in zip(files, x):
            start = time.perf_counter()
            res = runtime.run(sample[None])
            ms = (time.perf_counter() - start) * 1e3
            logits = res.logits[0].astype(np.float64)
            probs = np.exp(logits - logits.max())
            k, c = int(res.exit_index[0]), int(res.predictions[0])
            rows.append({"file": str(path), "class": names[c], "class_index": c, "exit": k,
                         "exit_name": runtime.exit_names[k], "score": float(probs[c] / probs.sum()),
                         "macs": int(res.macs[0]), "ms": ms})
    finally:
        runtime.close()
    return {"bundle": str(bundle_dir), "backend": runtime.backend.name, "num_exits": runtime.num_exits,
            "predictions": rows}
