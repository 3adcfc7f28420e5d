"""The pipeline stages, each a function from an artifact on disk to an artifact on disk:

    train      data + model config            -> <run>/checkpoint.pt
    calibrate  checkpoint + budget            -> <run>/calibration.json
    export     checkpoint + calibration       -> <run>/bundle/ (segments, reference model, manifest)
    evaluate   bundle                         -> accuracy, exit histogram, MACs and time vs the unsplit model
"""

from __future__ import annotations

import math
import platform
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

import edgeexit
from edgeexit import jsonio
from edgeexit.bundle import Bundle, load_bundle, write_bundle
from edgeexit.calibrate.budget import Budget
from edgeexit.calibrate.calibration import Calibration
from edgeexit.calibrate.scores import score_fn_torch
from edgeexit.costs import count_costs
from edgeexit.data import load_dataset
from edgeexit.data.spec import InputSpec, Splits
from edgeexit.errors import ConfigError
from edgeexit.export import export_segments, export_unsplit
from edgeexit.measure import side_by_side
from edgeexit.models import EarlyExitNet, ModelConfig, build_model
from edgeexit.outputs import collect_outputs, dataset_arrays
from edgeexit.runtime import EarlyExitRuntime, OrtModel
from edgeexit.train.checkpoint import load_checkpoint, model_from_checkpoint
from edgeexit.train.trainer import TrainConfig, TrainResult, train

POLICIES = ("search", "fractions", "fixed", "gater")


@dataclass
class DataConfig:
    name: str = "fashion-mnist"
    image_size: int = 32
    seed: int = 0
    root: str | None = None
    limit_train: int | None = None
    limit_val: int | None = None
    limit_test: int | None = None

    def load(self, channels: int | None = None) -> Splits:
        return load_dataset(self.name, image_size=self.image_size, root=self.root, seed=self.seed,
                            limit_train=self.limit_train, limit_val=self.limit_val, limit_test=self.limit_test,
                            channels=channels)


def train_stage(run_dir: Path, data: DataConfig, model: ModelConfig, cfg: TrainConfig, *, resume: bool = False,
                progress: bool = True) -> TrainResult:
    splits = data.load()
    spec = splits.spec
    model = ModelConfig.from_dict({**model.to_dict(), "num_classes": spec.num_classes, "in_channels": spec.channels,
                                   "image_size": spec.height})
    torch.manual_seed(cfg.seed)
    net = build_model(model)
    return train(net, model, splits.train, splits.val, spec, asdict(data), cfg, Path(run_dir) / "checkpoint.pt",
                 resume=resume, progress=progress)


def load_trained(checkpoint: Path) -> tuple[EarlyExitNet, ModelConfig, InputSpec, DataConfig]:
    ckpt = load_checkpoint(checkpoint)
    net, cfg = model_from_checkpoint(ckpt)
    return net, cfg, InputSpec.from_dict(ckpt["input_spec"]), DataConfig(**ckpt["data"])


def calibrate_stage(checkpoint: Path, out: Path, *, budget: Budget | None, policy: str = "search",
                    score: str = "max_softmax", limit: int | None = None, threshold: float = 0.5) -> Calibration:
    """Thresholds on the validation split for `budget`, written to `out` (calibration.json)."""
    from edgeexit.calibrate import policies

    net, cfg, spec, data = load_trained(checkpoint)
    splits = data.load(spec.channels)
    outs = collect_outputs(net, splits.val, limit=limit)
    costs = count_costs(net, spec.channels, spec.height).cumulative_macs
    if policy == "search":
        cal = policies.calibrate_search(outs.logits, outs.labels, costs, budget, kind=score, confidences=outs.confidences)
    elif policy == "fractions":
        cal = policies.calibrate_fractions(outs.logits, outs.labels, costs, budget, kind=score, confidences=outs.confidences)
    elif policy == "fixed":
        cal = policies.calibrate_fixed(outs.logits, outs.labels, costs, budget, confidences=outs.confidences, threshold=threshold)
    elif policy == "gater":
        cal = policies.calibrate_gater(outs.logits, outs.labels, costs, budget, confidences=outs.confidences)
    else:
        raise ConfigError("unknown calibration policy", got=policy, expected=", ".join(POLICIES))
    jsonio.write_json(Path(out), cal.to_dict())
    return cal


def _output_shapes(net: EarlyExitNet, score_fn, input_shape) -> list[list[list[int]]]:
    x = torch.zeros(2, *input_shape)
    shapes = []
    with torch.no_grad():
        for k in range(net.num_exits):
            outs = net.exit_segment(k, score_fn).eval()(x)
            shapes.append([list(o.shape[1:]) for o in outs])
            x = outs[0]
    return shapes


def export_stage(checkpoint: Path, calibration: Path, bundle_dir: Path, *, target: str = "cpu") -> Bundle:
    """Split, export every segment to ONNX (checked against torch), and write the verified bundle."""
    from edgeexit.targets import load_target

    tgt = load_target(target)
    if "onnx" not in tgt.formats:
        raise ConfigError(f"target {tgt.name} does not take ONNX segments", got=tgt.formats, expected="onnx",
                          hint="this edgeexit version exports ONNX; use --target cpu for CPU emulation")
    net, cfg, spec, data = load_trained(checkpoint)
    cal = Calibration.from_dict(jsonio.read_json(calibration))
    if len(cal.thresholds) != net.num_exits:
        raise ConfigError("calibration and model disagree on the number of exits", got=len(cal.thresholds),
                          expected=net.num_exits, hint="calibrate this checkpoint again")
    score_fn = score_fn_torch(cal.score_kind)
    costs = count_costs(net, spec.channels, spec.height)
    shapes = _output_shapes(net, score_fn, spec.shape)

    def populate(tmp: Path) -> None:
        export_segments(net, score_fn, spec.shape, tmp / "segments")
        export_unsplit(net, spec.shape, tmp / "reference" / "full.onnx")
        jsonio.write_json(tmp / "calibration.json", cal.to_dict())

    import onnx
    import onnxruntime

    manifest = {
        "edgeexit_version": edgeexit.__version__,
        "model": cfg.to_dict(),
        "input": {**spec.to_dict(), "shape": list(spec.shape), "layout": "NCHW"},
        "class_names": list(spec.class_names),
        "data": asdict(data),
        "exits": [{
            "index": k, "name": net.exit_names[k], "segment": f"segments/seg{k}.onnx", "output_shapes": shapes[k],
            "macs": costs.segment_macs[k], "head_macs": costs.head_macs[k], "cumulative_macs": costs.cumulative_macs[k],
            "params": costs.segment_params[k], "head_params": costs.head_params[k],
            "threshold": cal.thresholds[k], "score": cal.score_kind,
        } for k in range(net.num_exits)],
        "full_macs": costs.full_macs,
        "reference": "reference/full.onnx",
        "target": tgt.name, "format": "onnx", "precision": "fp32",
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     "python": platform.python_version()},
    }
    return write_bundle(Path(bundle_dir), manifest, populate)


def evaluate_bundle(bundle_dir: Path, *, split: str = "test", batch_size: int = 64, limit: int | None = None,
                    repeats: int = 3, time_batches: int | None = None, threads: int | None = None) -> dict:
    """Accuracy, exit histogram, MACs and wall time of the early-exit runtime vs the unsplit model (same backend)."""
    bundle = load_bundle(Path(bundle_dir))
    data = DataConfig(**bundle.manifest["data"])
    splits = data.load(bundle.manifest["input"]["channels"])
    dataset = {"test": splits.test, "val": splits.val, "train": splits.train}.get(split)
    if dataset is None:
        raise ConfigError("unknown split", got=split, expected="test, val or train")
    x, y = dataset_arrays(dataset, limit)
    runtime = EarlyExitRuntime.from_bundle(bundle, threads=threads)
    full = OrtModel(bundle.path(bundle.manifest["reference"]), threads=threads)
    ee_preds, ee_exits, full_preds = [], [], []
    for i in range(0, len(x), batch_size):
        r = runtime.run(x[i:i + batch_size])
        ee_preds.append(r.predictions)
        ee_exits.append(r.exit_index)
        full_preds.append(full.run(x[i:i + batch_size])[0].argmax(1))
    ee_preds, ee_exits, full_preds = map(np.concatenate, (ee_preds, ee_exits, full_preds))
    cum = np.array([e["cumulative_macs"] for e in bundle.exits], dtype=np.float64)
    timing = side_by_side({"early_exit": runtime.run, "full": lambda b: full.run(b)}, x, batch_size,
                          repeats=repeats, max_batches=time_batches)
    n_exits = len(bundle.exits)
    return {
        "bundle": str(bundle.root), "split": split, "samples": int(len(y)), "batch_size": batch_size,
        "full_accuracy": float((full_preds == y).mean()),
        "early_exit_accuracy": float((ee_preds == y).mean()),
        "exit_histogram": np.bincount(ee_exits, minlength=n_exits).tolist(),
        "exit_names": [e["name"] for e in bundle.exits],
        "mean_macs": float(cum[ee_exits].mean()),
        "full_macs": int(bundle.manifest["full_macs"]),
        "macs_fraction": float(cum[ee_exits].mean() / bundle.manifest["full_macs"]),
        "latency_fraction": timing.ratio("early_exit", "full"),
        "per_image_ms": {k: timing.per_image_ms(k) for k in timing.seconds},
        "timed_batches": len(timing.seconds["full"]),
        "agreement_with_full": float((ee_preds == full_preds).mean()),
    }
