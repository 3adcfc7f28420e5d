"""The pipeline stages, each a function from an artifact on disk to an artifact on disk:

    train      data + model config            -> <run>/checkpoint.pt
    calibrate  checkpoint + budget            -> <run>/calibration.json
    export     checkpoint + calibration       -> <run>/bundle/ (segments, reference model, manifest)
    evaluate   bundle                         -> accuracy, exit histogram, MACs and time vs the unsplit model
"""

from __future__ import annotations

import platform
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
from edgeexit.export import export_segments, export_unsplit, segment_output_shapes
from edgeexit.measure import side_by_side
from edgeexit.models import EarlyExitNet, ModelConfig, build_model
from edgeexit.outputs import collect_outputs, dataset_arrays
from edgeexit.prune import PruneResult
from edgeexit.runtime import EarlyExitRuntime, OrtModel, RunResult
from edgeexit.train.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from edgeexit.train.trainer import TrainConfig, TrainResult, train


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
    if cfg.method == "budget" and not model.gater_features:
        # papers/003's CIFAR setting (Supplementary B): the gater reads confidence and entropy.
        model = ModelConfig.from_dict({**model.to_dict(), "gater_features": ("confidence", "entropy")})
    torch.manual_seed(cfg.seed)
    net = build_model(model)
    if not resume:  # a pruned network of an earlier training must not outlive it
        (Path(run_dir) / "pruned.pt").unlink(missing_ok=True)
        (Path(run_dir) / "pruned.json").unlink(missing_ok=True)
    return train(net, model, splits.train, splits.val, spec, asdict(data), cfg, Path(run_dir) / "checkpoint.pt",
                 resume=resume, progress=progress)


def load_trained(checkpoint: Path) -> tuple[EarlyExitNet, ModelConfig, InputSpec, DataConfig]:
    return _trained(load_checkpoint(checkpoint))


def _trained(ckpt: dict) -> tuple[EarlyExitNet, ModelConfig, InputSpec, DataConfig]:
    net, cfg = model_from_checkpoint(ckpt)
    return net, cfg, InputSpec.from_dict(ckpt["input_spec"]), DataConfig(**ckpt["data"])


def reference_macs(checkpoint: Path | dict) -> int:
    """MACs of one image through the original, unsplit model (the yardstick, also for pruned networks)."""
    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    spec = InputSpec.from_dict(ckpt["input_spec"])
    return count_costs(model_from_checkpoint(ckpt, unpruned=True)[0], spec.channels, spec.height).full_macs


def calibrate_stage(checkpoint: Path, out: Path, *, budget: Budget | None, policy: str = "search",
                    score: str | None = None, recipe: str = "default", limit: int | None = None,
                    threshold: float = 0.5, profile: dict | None = None, curves: bool = True) -> Calibration:
    """Thresholds for `budget` on the recipe's calibration set (validation split by default), written to `out`
    (calibration.json), with the anytime and budgeted-batch curves beside it (curves.json, curves.png).

    A millisecond budget reads the per-exit latency table of `profile` (what `edgeexit profile` measured).
    """
    from edgeexit.calibrate import anytime_curve, budget_curve, load_recipe, plot_curves, policies

    fixed_score = {"fixed": "confidence", "gater": "gater"}.get(policy)
    if fixed_score and score not in (None, fixed_score):
        raise ConfigError(f"the {policy} policy always scores by {fixed_score}", got=f"--score {score}",
                          expected=f"no --score, or --score {fixed_score}", hint="use --policy search or fractions for other scores")
    score = score or fixed_score or "max_softmax"
    ckpt = load_checkpoint(checkpoint)
    net, cfg, spec, data = _trained(ckpt)
    rec = load_recipe(recipe)
    splits = data.load(spec.channels)
    dataset = {"val": splits.val, "train": splits.train, "test": splits.test}.get(rec.split)
    if dataset is None:
        raise ConfigError("calibration recipe names an unknown split", got=rec.split, expected="val, train or test")
    outs = collect_outputs(net, dataset, limit=limit).subset(rec.indices(len(dataset) if limit is None else min(limit, len(dataset))))
    costs = count_costs(net, spec.channels, spec.height).cumulative_macs
    if budget is not None and budget.kind == "macs_fraction":
        # A fraction always means a fraction of the original unsplit model (what eval and the report divide
        # by), not of the last exit with every head, nor of a pruned network's last exit.
        budget = Budget("macs", budget.value * reference_macs(ckpt), budget.target)
    # The gater's P_k are the exit scores of a budget-trained model (papers/003), read from every exit's logits.
    confidences = gater_scores(net, outs.logits) if "gater" in (policy, score) else outs.confidences
    options: dict = {"confidences": confidences}
    if policy in ("search", "fractions"):
        options["kind"] = score
    if policy == "fixed":
        options["threshold"] = threshold
    if profile is not None:
        options.update(latency_ms=profile["latency_ms"], latency_target=profile["target"])
    cal = policies.calibrate(outs.logits, outs.labels, costs, budget, policy=policy, **options)
    jsonio.write_json(Path(out), cal.to_dict())
    if curves:
        curve_costs = cal.costs
        anytime = anytime_curve(outs.logits, outs.labels, curve_costs, cost_unit=cal.cost_unit)
        sweep_options = {k: v for k, v in options.items() if k not in ("latency_ms", "latency_target")}
        budgeted = (budget_curve(outs.logits, outs.labels, curve_costs, policy=policy, cost_unit=cal.cost_unit,
                                 **sweep_options) if policy in ("search", "fractions") else None)
        jsonio.write_json(Path(out).with_name("curves.json"), {"anytime": anytime, "budgeted": budgeted})
        plot_curves(Path(out).with_name("curves.png"), anytime=anytime, budgeted=budgeted, operating_point=cal,
                    title=f"{cfg.backbone}: accuracy vs cost ({policy}, {cal.score_kind})")
    return cal


def _require_gater(net: EarlyExitNet):
    if net.gater is None:
        raise ConfigError("the gater score needs a model trained with a gater", got="a model without one",
                          expected="a checkpoint of `edgeexit train --method budget`",
                          hint="calibrate with --score max_softmax (or confidence for EENets) instead")
    return net.gater


@torch.no_grad()
def gater_scores(net: EarlyExitNet, logits: np.ndarray) -> np.ndarray:
    """P_k [E, N] of the net's gater on per-exit logits [E, N, C]: what the exported segments compute."""
    from edgeexit.train.gater import gater_score

    gater = _require_gater(net).eval()
    return np.stack([gater_score(torch.from_numpy(np.ascontiguousarray(l)), gater).numpy() for l in logits]).astype(np.float32)


class GaterScore(torch.nn.Module):
    """The exit score P_k = gater(logits) inside an exported segment; a module, so the gater's weights are part of
    the exported graph."""

    def __init__(self, gater: torch.nn.Module):
        super().__init__()
        self.gater = gater

    def forward(self, logits: torch.Tensor, conf: torch.Tensor | None = None) -> torch.Tensor:
        from edgeexit.train.gater import gater_score

        return gater_score(logits, self.gater)


def prune_stage(checkpoint: Path, out: Path, *, mode: str | None = None, limit: int | None = None,
                budget: Budget | None = None, score: str = "max_softmax") -> PruneResult:
    """Prune to the best exit subset on the validation split; writes the pruned checkpoint `out` (the
    sub-network and its ensemble weights) and `out`.json with every subset's figures.

    Without a budget this is AEP's pruning (papers/000: best ensemble accuracy). With a MACs budget the subset
    with the best *early-exit* accuracy under that budget is kept (`prune_for_budget`), so that the cheap exits
    a budget needs are not pruned away for a small ensemble gain.
    """
    from edgeexit.prune import prune, prune_for_budget

    ckpt = load_checkpoint(checkpoint)
    if ckpt.get("kept_exits") is not None:
        raise ConfigError("checkpoint is already pruned", got=f"kept exits {ckpt['kept_exits']}",
                          expected="the trained checkpoint", hint="prune RUN/checkpoint.pt, not RUN/pruned.pt")
    net, cfg, spec, data = _trained(ckpt)
    mode = mode or ckpt["train_config"].get("weight_mode", "unif")
    outs = collect_outputs(net, data.load(spec.channels).val, limit=limit)
    c = count_costs(net, spec.channels, spec.height)
    sizes = {"segment_params": c.segment_params, "head_params": c.head_params, "segment_macs": c.segment_macs,
             "head_macs": c.head_macs}
    if budget is None:
        result = prune(outs.logits, outs.labels, mode=mode, **sizes)
    elif budget.kind == "ms":
        raise ConfigError("pruning under a millisecond budget is not supported", got=budget.describe(),
                          expected="a MACs budget (fraction or absolute), or none for AEP's ensemble pruning",
                          hint="prune with --budget 0.5 (MACs), then calibrate for milliseconds")
    else:
        limit_macs = budget.value * c.full_macs if budget.kind == "macs_fraction" else budget.value
        result = prune_for_budget(outs.logits, outs.labels, mode=mode, budget_macs=limit_macs, score=score, **sizes)
    sub = net.select_exits(result.kept_exits)
    save_checkpoint(Path(out), {**{k: v for k, v in ckpt.items() if k != "format"},
                                "state_dict": sub.state_dict(), "kept_exits": result.kept_exits,
                                "unpruned_state_dict": ckpt["state_dict"],
                                "ensemble": {"mode": result.mode, "weights": result.weights}})
    jsonio.write_json(Path(out).with_suffix(".json"), result.to_dict())
    return result


def exportable_target(name: str):
    """The target, if this edgeexit version can export a bundle for it (ONNX segments)."""
    from edgeexit.targets import load_target

    tgt = load_target(name)
    if "onnx" not in tgt.formats:
        raise ConfigError(f"target {tgt.name} does not take ONNX segments", got=list(tgt.formats), expected="onnx",
                          hint="ExecuTorch .pte export is not built yet; use --target cpu for CPU emulation")
    return tgt


def export_stage(checkpoint: Path, calibration: Path, bundle_dir: Path, *, target: str = "cpu") -> Bundle:
    """Split, export every segment to ONNX (checked against torch), and write the verified bundle."""

    tgt = exportable_target(target)
    ckpt = load_checkpoint(checkpoint)
    net, cfg, spec, data = _trained(ckpt)
    if not Path(calibration).is_file():
        raise ConfigError("no calibration to export", got=f"no {calibration}", expected="calibration.json",
                          hint="run `edgeexit calibrate` first")
    try:
        cal = Calibration.from_dict(jsonio.read_json(calibration))
    except ValueError as err:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{calibration} is not a calibration edgeexit wrote", got=str(err), expected="calibration JSON",
                          hint="run `edgeexit calibrate` again") from err
    if len(cal.thresholds) != net.num_exits:
        raise ConfigError("calibration and model disagree on the number of exits", got=len(cal.thresholds),
                          expected=net.num_exits, hint="calibrate this checkpoint again")
    score_fn = GaterScore(_require_gater(net)) if cal.score_kind == "gater" else score_fn_torch(cal.score_kind)
    costs = count_costs(net, spec.channels, spec.height)
    shapes = segment_output_shapes(net, score_fn, spec.shape)

    def populate(tmp: Path) -> None:
        export_segments(net, score_fn, spec.shape, tmp / "segments")
        # the reference is the original backbone even when the bundle is a pruned sub-network
        export_unsplit(model_from_checkpoint(ckpt, unpruned=True)[0], spec.shape, tmp / "reference" / "full.onnx")
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
        "full_macs": reference_macs(ckpt),
        "reference": "reference/full.onnx",
        "ensemble": _ensemble(ckpt, net.num_exits),
        "target": tgt.name, "format": "onnx", "precision": "fp32",
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                     "python": platform.python_version()},
    }
    return write_bundle(Path(bundle_dir), manifest, populate)


def _ensemble(ckpt: dict, num_exits: int) -> dict:
    """AEP ensemble weights beta of the bundle's exits: the pruned subset's, or the training mode's."""
    from edgeexit.prune import aep_weights

    if ckpt.get("ensemble"):
        return ckpt["ensemble"]
    mode = ckpt["train_config"].get("weight_mode", "unif")
    return {"mode": mode, "weights": aep_weights(num_exits, mode, "output").tolist()}


def evaluate_bundle(bundle_dir: Path, *, split: str = "test", batch_size: int = 64, limit: int | None = None,
                    repeats: int = 3, time_batches: int | None = None, threads: int | None = None,
                    single_samples: int = 300) -> dict:
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
    runs = {"early_exit": runtime.run, "full": full.run}
    timing = side_by_side(runs, x, batch_size, repeats=repeats, max_batches=time_batches)
    by_batch = {str(batch_size): timing.ratio("early_exit", "full")}
    if batch_size != 1 and single_samples:  # per-call overhead shows at batch 1: measure it too
        one = side_by_side(runs, x[:single_samples], 1, repeats=repeats, max_batches=time_batches)
        by_batch = {"1": one.ratio("early_exit", "full"), **by_batch}
    n_exits = len(bundle.exits)
    return {
        "bundle": str(bundle.root), "split": split, "samples": int(len(y)), "batch_size": batch_size,
        "full_accuracy": float((full_preds == y).mean()),
        "early_exit_accuracy": float((ee_preds == y).mean()),
        "exit_histogram": RunResult.histogram(ee_exits, n_exits),
        "exit_names": [e["name"] for e in bundle.exits],
        "mean_macs": float(cum[ee_exits].mean()),
        "full_macs": int(bundle.manifest["full_macs"]),
        "macs_fraction": float(cum[ee_exits].mean() / bundle.manifest["full_macs"]),
        "latency_fraction": timing.ratio("early_exit", "full"),
        "latency_fraction_by_batch": by_batch,
        "per_image_ms": {k: timing.per_image_ms(k) for k in timing.seconds},
        "timed_batches": len(timing.seconds["full"]),
        "agreement_with_full": float((ee_preds == full_preds).mean()),
    }
