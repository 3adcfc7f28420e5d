"""The pipeline stages, each a function from artifacts on disk to an artifact on disk (names: `RunDir`):

    train      data + model config                       -> checkpoint.pt
    prune      checkpoint.pt                             -> pruned.pt (+ .json)
    calibrate  checkpoint (pruned or not) + budget       -> calibration.json, curves.{json,png}
    export     that checkpoint + calibration.json        -> bundle/ (programs lowered for the target, manifest v2)

(Evaluating a bundle: edgeexit/evaluate.py; the whole build in order: edgeexit/recipe.py.)
Every artifact records the sha256 of what it was made from; a stage refuses a stale or foreign input.
"""

from __future__ import annotations

import math
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ValidationError

import edgeexit
from edgeexit import jsonio
from edgeexit.bundle import BatchRange, Bundle, Ensemble, Exit, InputInfo, Provenance, Reference, write_bundle
from edgeexit.bundle.manifest import Probe
from edgeexit.calibrate.budget import Budget
from edgeexit.calibrate.calibration import Calibration, read_calibration_file, write_calibration_file
from edgeexit.compare import VECTORS, write_vectors
from edgeexit.data import load_dataset
from edgeexit.data.spec import InputSpec, Splits
from edgeexit.errors import ConfigError, DatasetError, ExportError
from edgeexit.models import EarlyExitNet, ModelConfig, build_model
from edgeexit.models.user import PassedModel
from edgeexit.models.costs import count_costs
from edgeexit.models.gater import GaterScore, gater_score
from edgeexit.models.scores import score_fn_torch
from edgeexit.outputs import collect_outputs
from edgeexit.prune import PruneResult
from edgeexit.rundir import RunDir
from edgeexit.runtime import EarlyExitRuntime
from edgeexit.train.checkpoint import (
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
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


def train_stage(run: RunDir, data: DataConfig, model: ModelConfig, cfg: TrainConfig, *, resume: bool = False,
                progress: bool = True, adopt: bool = False) -> TrainResult:
    splits = data.load()
    spec = splits.spec
    model = ModelConfig.from_dict({**model.to_dict(), "num_classes": spec.num_classes, "in_channels": spec.channels,
                                   "image_size": spec.height})
    if cfg.method == "budget" and not model.gater_features:
        # papers/003's CIFAR setting (Supplementary B): the gater reads confidence and entropy.
        model = ModelConfig.from_dict({**model.to_dict(), "gater_features": ("confidence", "entropy")})
    torch.manual_seed(cfg.seed)
    net = _build_for_size(model)
    result = train(net, model, splits.train, splits.val, spec, asdict(data), cfg, run.checkpoint,
                   resume=resume, progress=progress, adopt=adopt)
    if not resume and result.is_main:
        # a pruned network of an earlier training must not outlive it; removed once this one exists, so that a
        # refused or failed run leaves it (RunDir.trained refuses it as stale meanwhile)
        run.pruned.unlink(missing_ok=True)
        run.pruned_json.unlink(missing_ok=True)
    return result


def _build_for_size(model: ModelConfig) -> EarlyExitNet:
    """build_model, with an image too small for the backbone (its pooling leaves nothing) refused with the smallest
    size it takes, instead of torch's shape error."""
    try:
        return build_model(model)
    except RuntimeError as err:
        smallest = smallest_image_size(model, above=model.image_size)
        if smallest is None:
            raise
        raise ConfigError(f"{model.model or model.backbone} cannot take {model.image_size} px images",
                          got=f"--image-size {model.image_size}", expected=f"--image-size >= {smallest}",
                          hint=f"the backbone downsamples below one pixel; use --image-size {smallest} or more") from err


def smallest_image_size(model: ModelConfig, *, above: int, upto: int = 1024) -> int | None:
    """The smallest square image size in (above, upto] the model is built and runs at; None if none is."""
    def runs(size: int) -> bool:
        try:
            build_model(ModelConfig.from_dict({**model.to_dict(), "image_size": size, "weights": None}))
            return True
        except (RuntimeError, ConfigError):
            return False

    hi = above + 1
    while not runs(hi):  # pooling chains run at every size from their smallest on: double, then bisect
        if hi >= upto:
            return None
        hi = min(2 * hi, upto)
    lo = max(above, hi // 2)  # lo fails (or is `above`), hi runs
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if runs(mid) else (mid, hi)
    return hi


def load_trained(checkpoint: Path, model: PassedModel | None = None) -> tuple[EarlyExitNet, ModelConfig, InputSpec, DataConfig]:
    return _trained(load_checkpoint(checkpoint), model)


def _trained(ckpt: dict, model: PassedModel | None = None) -> tuple[EarlyExitNet, ModelConfig, InputSpec, DataConfig]:
    # `model`: the --model passed again on the command line, the only way a user's own builder is called
    net, cfg = model_from_checkpoint(ckpt, model=model)
    return net, cfg, InputSpec.from_dict(ckpt["input_spec"]), DataConfig(**ckpt["data"])


def reference_macs(checkpoint: Path | dict, model: PassedModel | None = None) -> int:
    """MACs of one image through the original, unsplit model (the yardstick, also for pruned networks)."""
    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    spec = InputSpec.from_dict(ckpt["input_spec"])
    return count_costs(model_from_checkpoint(ckpt, unpruned=True, model=model)[0], spec.channels, spec.height).full_macs


def read_profile(run: RunDir, checkpoint: Path) -> dict:
    """profile.json of the run, refused unless it measured a bundle of `checkpoint`."""
    if not run.profile.is_file():
        raise ConfigError("a millisecond budget needs the per-exit latency table of the target",
                          got=f"no {run.profile}", expected="RUN/profile.json",
                          hint="run `edgeexit export` then `edgeexit profile` first")
    from edgeexit.profile import read_profile_json  # the one reader of profile.json: typed and bounded

    prof = read_profile_json(run.profile)
    run.require_made_from(run.profile, (prof.get("provenance") or {}).get("checkpoint_sha256"), checkpoint,
                          "edgeexit export && edgeexit profile")
    return prof


def policy_score(policy: str, score: str | None, default: str = "max_softmax") -> str:
    """The exit score a policy calibrates: the fixed and gater policies always score by their own (EENet's h, the
    gater's P_k) and refuse another; the others take `score`, else `default`."""
    fixed = {"fixed": "confidence", "gater": "gater"}.get(policy)
    if fixed and score not in (None, fixed):
        raise ConfigError(f"the {policy} policy always scores by {fixed}", got=f"--score {score}",
                          expected=f"no --score, or --score {fixed}", hint="use --policy search or fractions for other scores")
    return score or fixed or default


def calibrate_stage(run: RunDir, checkpoint: Path, *, budget: Budget | None, policy: str = "search",
                    score: str | None = None, recipe: str = "default", limit: int | None = None,
                    threshold: float = 0.5, profile: dict | None = None, curves: bool = True,
                    temperature: bool = True, model: PassedModel | None = None, quota: str = "rounded") -> Calibration:
    """Thresholds for `budget` on the recipe's calibration set (validation split by default), written to
    RUN/calibration.json with the anytime and budgeted-batch curves beside it (curves.json, curves.png).

    A millisecond budget reads the per-exit latency table of `profile` (what `edgeexit profile` measured on a
    bundle of this checkpoint); its fractions are of the unsplit model's measured time.
    `temperature`: fit one temperature per exit on the calibration set (NLL) before the thresholds, for the
    policies that score by logits (search, fractions with max_softmax, margin, neg_entropy).
    `quota`: the fractions policy's count rule, "rounded" | "msdnet" (see `policies.calibrate_fractions`).
    """
    from edgeexit.calibrate import (
        LOGIT_KINDS,
        anytime_curve,
        budget_curve,
        fit_temperatures,
        load_recipe,
        plot_curves,
        policies,
    )

    score = policy_score(policy, score)
    if quota != "rounded" and policy != "fractions":
        raise ConfigError("a quota rule applies to the fractions policy only", got=f"--quota {quota} --policy {policy}",
                          expected="--policy fractions", hint="drop --quota, or calibrate with --policy fractions")
    ckpt = load_checkpoint(checkpoint)
    net, cfg, spec, data = _trained(ckpt, model)
    rec = load_recipe(recipe)
    splits = data.load(spec.channels)
    dataset = {"val": splits.val, "train": splits.train, "test": splits.test}.get(rec.split)
    if dataset is None:
        raise ConfigError("calibration recipe names an unknown split", got=rec.split, expected="val, train or test")
    outs = collect_outputs(net, dataset, limit=limit).subset(rec.indices(len(dataset) if limit is None else min(limit, len(dataset))))
    check_calibration_set(outs.labels, rec.split)
    costs = count_costs(net, spec.channels, spec.height).cumulative_macs
    # "A fraction of the full model" is always of the original unsplit model (MACs, or its measured ms).
    reference = float(reference_macs(ckpt, model))
    # The gater's P_k are the exit scores of a budget-trained model (papers/003), read from every exit's logits.
    confidences = gater_scores(net, outs.logits) if "gater" in (policy, score) else outs.confidences
    options: dict = {"confidences": confidences}
    if policy in ("search", "fractions"):
        options["kind"] = score
    if temperature and policy in ("search", "fractions") and score in LOGIT_KINDS:
        options["temperatures"], calibration_error = fit_temperatures(outs.logits, outs.labels)
    if policy == "fixed":
        options["threshold"] = threshold
    if policy == "fractions":
        options["quota"] = quota
    if profile is not None:
        options.update(latency_ms=profile["latency_ms"], latency_target=profile["target"])
        if budget is not None and budget.kind == "ms":
            reference = float(profile["full"]["p50_ms"])
    cal = policies.calibrate(outs.logits, outs.labels, costs, budget, policy=policy, reference_cost=reference, **options)
    if profile is not None and budget is not None and budget.kind == "ms" and not profile.get("trusted", True):
        worst = max(n["noise"] for n in profile["noise"].values())
        cal.warnings.append(f"the latency table comes from a noisy profile (the unsplit model timed twice differed by "
                            f"{100 * worst:.1f} %): these millisecond thresholds are only as good as that; profile "
                            "again on an idle device (edgeexit profile) and calibrate again")
    made_from = {"checkpoint": checkpoint.name, "checkpoint_sha256": run.sha256(checkpoint)}
    if profile is not None:
        made_from["profile_sha256"] = run.sha256(run.profile) if run.profile.is_file() else None
    cal.provenance = made_from
    if "temperatures" in options:
        cal.calibration_error = calibration_error
    write_calibration_file(run.calibration, cal)
    if curves:
        anytime = anytime_curve(outs.logits, outs.labels, cal.costs, cost_unit=cal.cost_unit, reference_cost=reference)
        sweep_options = {k: v for k, v in options.items() if k not in ("latency_ms", "latency_target")}
        budgeted = (budget_curve(outs.logits, outs.labels, cal.costs, policy=policy, cost_unit=cal.cost_unit,
                                 reference_cost=reference, **sweep_options) if policy in ("search", "fractions") else None)
        jsonio.write_json(run.curves_json, {"anytime": anytime, "budgeted": budgeted})
        plot_curves(run.curves_png, anytime=anytime, budgeted=budgeted, operating_point=cal, reference_cost=reference,
                    title=f"{cfg.backbone}: accuracy vs cost ({policy}, {cal.score_kind})")
    return cal


MIN_CALIBRATION_SAMPLES = 10  # below this, thresholds (and the accuracy they promise) are noise


def check_calibration_set(labels: np.ndarray, split: str) -> None:
    """Refuse a calibration set that cannot support thresholds: too few samples, or a single class (its accuracy
    says nothing about the others)."""
    n = int(len(labels))
    if n < MIN_CALIBRATION_SAMPLES:
        raise DatasetError("too few calibration samples", got=f"{n} samples of the {split} split",
                           expected=f">= {MIN_CALIBRATION_SAMPLES} samples",
                           hint="raise --limit (or --limit-val), or use a recipe with more samples")
    classes = np.unique(labels)
    if len(classes) < 2:
        raise DatasetError("the calibration set holds a single class", got=f"{n} samples, all of class {int(classes[0])}",
                           expected=">= 2 classes", hint="calibrate on a split that holds every class (raise --limit)")


def _require_gater(net: EarlyExitNet):
    if net.gater is None:
        raise ConfigError("the gater score needs a model trained with a gater", got="a model without one",
                          expected="a checkpoint of `edgeexit train --method budget`",
                          hint="calibrate with --score max_softmax (or confidence for EENets) instead")
    return net.gater


@torch.no_grad()
def gater_scores(net: EarlyExitNet, logits: np.ndarray) -> np.ndarray:
    """P_k [E, N] of the net's gater on per-exit logits [E, N, C]: what the exported segments compute."""
    gater = _require_gater(net).eval()
    return np.stack([gater_score(torch.from_numpy(np.ascontiguousarray(l)), gater).numpy() for l in logits]).astype(np.float32)


def prune_stage(run: RunDir, *, mode: str | None = None, limit: int | None = None,
                budget: Budget | None = None, score: str = "max_softmax", model: PassedModel | None = None) -> PruneResult:
    """Prune to the best exit subset on the validation split; writes the pruned checkpoint `out` (the
    sub-network, its ensemble weights and the sha256 of the checkpoint it was cut from) and pruned.json with every
    subset's figures.

    Without a budget this is AEP's pruning (papers/000: best ensemble accuracy). With a MACs budget the subset
    with the best *early-exit* accuracy under that budget is kept (`prune_for_budget`), so that the cheap exits
    a budget needs are not pruned away for a small ensemble gain.
    """
    from edgeexit.prune import prune, prune_for_budget

    ckpt = load_checkpoint(run.checkpoint)
    if ckpt.get("kept_exits") is not None:
        raise ConfigError("checkpoint is already pruned", got=f"kept exits {ckpt['kept_exits']}",
                          expected="the trained checkpoint", hint="prune RUN/checkpoint.pt, not RUN/pruned.pt")
    net, cfg, spec, data = _trained(ckpt, model)
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
        result = prune_for_budget(outs.logits, outs.labels, mode=mode, budget_macs=limit_macs,
                                  reference_macs=c.full_macs, score=score, **sizes)
    write_pruned(run, ckpt, net, result)
    return result


def write_pruned(run: RunDir, ckpt: dict, net: EarlyExitNet, result: PruneResult) -> None:
    """RUN/pruned.pt (the sub-network keeping `result.kept_exits` of the trained `net`, its ensemble weights, the
    sha256 of RUN/checkpoint.pt it was cut from) and RUN/pruned.json: what `prune` and the deployment search write."""
    from edgeexit.rundir import pruned_record

    net.select_exits(result.kept_exits)  # the subset is one this network can be cut to (ValueError otherwise)
    # no weights: pruned.pt takes them from checkpoint.pt (edgeexit.rundir.resolve_pruned)
    save_checkpoint(run.pruned, pruned_record(ckpt, kept_exits=result.kept_exits,
                                              ensemble={"mode": result.mode, "weights": result.weights},
                                              checkpoint_sha256=run.sha256(run.checkpoint)))
    jsonio.write_json(run.pruned_json, {**result.to_dict(), "provenance": {
        "checkpoint_sha256": run.sha256(run.checkpoint), "pruned_sha256": run.sha256(run.pruned)}})


ALWAYS = ("pt2",)  # every bundle carries its torch.export programs: the torch backend and `compare` run them


def exportable(target, precision: str | None = None):
    """(target, precision, formats): the target's formats this edgeexit writes at that precision, the target's own
    (first) format always among them; a clear error otherwise (build calls this before it trains). A secondary
    format whose lowering cannot honour the precision (ONNX beside an int8 .pte) is left out: the manifest's
    `formats` says what the bundle holds.

    A device-specific format (`BUILT_ON_DEVICE`: TensorRT engines) is not written here: the bundle carries its
    source, the ONNX segments (fp32; the engines get the precision when they are built), and nothing executable:
    `edgeexit engines RUN/bundle` verifies it and builds them on the device as a new version of the bundle."""
    import importlib

    from edgeexit.export import LOWERINGS
    from edgeexit.targets import Target, load_target

    tgt = target if isinstance(target, Target) else load_target(target)  # a build parses its target once
    precision = precision or tgt.default_precision
    if precision not in tgt.precision:
        raise ConfigError(f"target {tgt.name} does not offer precision {precision}", got=precision,
                          expected=" | ".join(tgt.precision), hint="pick one of the target's precisions")
    formats, on_device = [], False
    for i, fmt in enumerate(tgt.formats):
        if fmt not in LOWERINGS:
            raise ExportError(f"target {tgt.name} needs {fmt} files, which this edgeexit cannot write yet",
                              got=list(tgt.formats), expected=" | ".join(LOWERINGS),
                              hint="--target cpu exports ONNX for onnxruntime (the CPU emulation of every target)")
        lowering = importlib.import_module(LOWERINGS[fmt])
        offered = lowering.PRECISIONS
        if precision in offered:
            if getattr(lowering, "BUILT_ON_DEVICE", False):
                on_device = True
            else:
                formats.append(fmt)
        elif i == 0:
            raise ExportError(f"the {fmt} lowering cannot produce {precision}", got=precision, expected=" | ".join(offered),
                              hint=f"export --precision {offered[0]}, or a target whose runtime builds {precision} itself")
    if on_device:
        formats.insert(0, "onnx")  # what the device builds from
    return tgt, precision, list(dict.fromkeys([*formats, *ALWAYS]))


def manifest_threshold(t: float, final: bool) -> float | None:
    """Calibration's ±inf as the manifest says them: +inf (never exits) and the final exit's -inf are null; -inf
    elsewhere (everything exits) is the lowest float32, which every score reaches."""
    if final or t == math.inf:
        return None
    if t == -math.inf:
        return float(np.finfo(np.float32).min)
    return float(t)


def read_calibration(run: RunDir, checkpoint: Path) -> Calibration:
    """calibration.json of the run, refused unless it was calibrated on `checkpoint`."""
    if not run.calibration.is_file():
        raise ConfigError("no calibration to export", got=f"no {run.calibration}", expected="calibration.json",
                          hint="run `edgeexit calibrate` first")
    cal = read_calibration_file(run.calibration)  # the schema: strict types, thresholds in the score's range
    run.require_made_from(run.calibration, (cal.provenance or {}).get("checkpoint_sha256"), checkpoint, "edgeexit calibrate")
    return cal


def export_stage(run: RunDir, checkpoint: Path, out: Path | None = None, *, target="cpu",
                 precision: str | None = None, probes: bool = True, model: PassedModel | None = None,
                 attach=None, slim: bool = False, slim_vectors: bool = False) -> Bundle:
    """Split into torch.export programs, lower them to every format of the target (a name, or the `Target` a build
    parsed once; each lowering checked against torch), and write the verified bundle at `out` (default RUN/bundle).
    `probes`: also each intermediate exit's head alone and the network truncated there, for the profiler (never run
    by the exit loop). `attach(bundle)`: files measured on it that go into the same write (see write_bundle).
    `slim`: also the deployable bundle beside it (`out`-slim: edgeexit.bundle.slim), with the test vectors when
    `slim_vectors`; the development bundle is returned, the deployable one is its `.deployable`."""
    import importlib

    from edgeexit.export import LOWERINGS, probe_programs, split_programs

    from edgeexit.bundle.slim import slim_path
    from edgeexit.bundle.store import check_dest

    dest = Path(out) if out is not None else run.bundle
    check_dest(dest)  # a wrong --out is refused before minutes of lowering
    if slim:
        check_dest(slim_path(dest))
    tgt, precision, formats = exportable(target, precision)
    ckpt = load_checkpoint(checkpoint)
    net, cfg, spec, data = _trained(ckpt, model)
    cal = read_calibration(run, checkpoint)
    if len(cal.thresholds) != net.num_exits:
        raise ConfigError("calibration and model disagree on the number of exits", got=len(cal.thresholds),
                          expected=net.num_exits, hint="calibrate this checkpoint again")
    score_fn = GaterScore(_require_gater(net)) if cal.score_kind == "gater" else score_fn_torch(cal.score_kind)
    costs = count_costs(net, spec.channels, spec.height)
    # the reference is the original backbone even when the bundle is a pruned sub-network
    original = model_from_checkpoint(ckpt, unpruned=True, model=model)[0]
    full_macs = count_costs(original, spec.channels, spec.height).full_macs
    programs, reference = split_programs(net, score_fn, spec.shape, max_batch=tgt.batch[1], unsplit=original.unsplit(),
                                         temperatures=cal.temperatures)
    extra = probe_programs(net, score_fn, spec.shape, max_batch=tgt.batch[1], temperatures=cal.temperatures) \
        if probes else []
    val = None
    if precision == "int8":
        from edgeexit.export.quantize import quantize_programs

        val = data.load(spec.channels).val
        draw = np.random.default_rng(0).choice(len(val), min(len(val), QUANT_SAMPLES), replace=False)
        # TensorRT builds int8 from symmetric Q/DQ (zero point 0); XNNPACK takes its own affine activations
        scheme = "tensorrt" if tgt.delegate == "tensorrt" else "xnnpack"
        quantized = quantize_programs([*programs, reference, *extra], val.images[np.sort(draw)], scheme=scheme)
        programs, reference, extra = quantized[:len(programs)], quantized[len(programs)], quantized[len(programs) + 1:]
    by_name = {p.name: p for p in extra}

    last = net.num_exits - 1

    def populate(tmp: Path) -> dict:
        nonlocal cal
        refs = {fmt: importlib.import_module(LOWERINGS[fmt]).lower_programs([*programs, reference, *extra], tmp,
                                                                           precision=precision)
                for fmt in formats}

        def segment(p) -> dict:  # the program in every format, and its tensors: what Exit, Probe, Reference share
            return {"segment": {f: refs[f][p.name] for f in formats}, "inputs": p.inputs, "outputs": p.outputs}

        def probe(name: str) -> Probe | None:
            p = by_name.get(name)
            return None if p is None else Probe(**segment(p))

        if precision == "int8":  # quantisation moves the scores: thresholds again, on the int8 program's own
            cal = recalibrate(cal, tmp, refs[formats[0]], formats[0], programs, val, tgt.batch[1], run.sha256(run.calibration))
        write_calibration_file(tmp / "calibration.json", cal)
        write_vectors(tmp / VECTORS, *reference_outputs(programs, spec.shape))
        exits = [Exit(index=k, name=net.exit_names[k], **segment(p), macs=costs.segment_macs[k],
                      head_macs=costs.head_macs[k], cumulative_macs=costs.cumulative_macs[k],
                      params=costs.segment_params[k], head_params=costs.head_params[k],
                      threshold=manifest_threshold(cal.thresholds[k], k == last), score=cal.score_kind,
                      temperature=cal.temperatures[k] if cal.temperatures else 1.0,
                      head=probe(f"head{k}"), static=probe(f"static{k}"))
                 for k, p in enumerate(programs)]
        # the target's own format may run a sample alone in one program (ONNX: fewer graph boundaries at batch 1)
        batch_one = getattr(importlib.import_module(LOWERINGS[formats[0]]), "batch_one_form", None)
        fused = batch_one(tmp, refs[formats[0]], [p.name for p in programs], spec.shape, len(spec.class_names)) \
            if batch_one is not None and tgt.batch[0] == 1 else None
        return {"exits": [e.model_dump(mode="json") for e in exits],
                "reference": Reference(**segment(reference), macs=full_macs).model_dump(mode="json"), "fused": fused}

    try:
        fields = {
            "edgeexit_version": edgeexit.__version__,
            "format": formats[0], "formats": formats, "precision": precision, "runtime": tgt.runtime,
            "delegate": tgt.delegate,
            "batch": BatchRange(min=tgt.batch[0], max=tgt.batch[1]), "target": tgt.name,
            "input": InputInfo(shape=list(spec.shape), mean=list(spec.mean), std=list(spec.std),
                               resize="bilinear_antialias" if data.name.startswith("folder") else "bilinear"),
            "class_names": list(spec.class_names),
            "full_macs": full_macs,
            "ensemble": Ensemble(**_ensemble(ckpt, net.num_exits)),
            "model": cfg.to_dict(), "data": asdict(data),
            "versions": _versions(formats),
            "provenance": Provenance(checkpoint=checkpoint.name, checkpoint_sha256=run.sha256(checkpoint),
                                     calibration_sha256=run.sha256(run.calibration)),
        }
        fields = {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v for k, v in fields.items()}
        bundle = write_bundle(dest, fields, populate, attach)
    except ValidationError as err:  # the manifest's own types refuse what the model gives (an exit name, say)
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()[:5])
        raise ExportError("the model does not fit the bundle manifest", got=problems,
                          expected="the manifest v2 types (edgeexit/bundle/manifest.py)") from None
    return with_deployable(bundle, dest, slim_vectors) if slim else bundle


def with_deployable(bundle: Bundle, dest: Path, vectors: bool) -> Bundle:
    """The development bundle just written at `dest`, with the deployable bundle cut from it (`.deployable`). When
    that write fails, the error says that the development bundle is new and the deployable one is not."""
    import dataclasses

    from edgeexit.bundle.slim import slim_path, write_slim
    from edgeexit.errors import EdgeExitError

    at = slim_path(dest)
    try:
        slim = write_slim(bundle, at, vectors=vectors)
    except (EdgeExitError, OSError) as err:
        raise ExportError(f"the development bundle {dest} was written, the deployable bundle {at} was not (what is "
                          f"there is older, if anything)", got=str(err)[:500], expected="both bundles",
                          hint="free the disk or the path and export again; or export with --no-slim") from err
    return dataclasses.replace(bundle, deployable=slim, deployable_at=at)


QUANT_SAMPLES = 1000  # validation images the int8 observers see


def recalibrate(cal: Calibration, root: Path, refs: dict, fmt: str, programs, val, max_batch: int,
                source_sha256: str) -> Calibration:
    """`cal`'s policy and budget applied again to the scores of the lowered (e.g. int8) programs in `root` on the
    validation split, as the deployed runtime computes them."""
    from edgeexit.calibrate import policies
    from edgeexit.runtime.registry import host_backend_of

    be = host_backend_of(fmt).make()  # the format's CPU backend: the scores as the deployed runtime computes them
    segments = [be.open_segment(root / refs[p.name].file, refs[p.name], p.inputs, p.outputs, max_batch) for p in programs]
    num_classes = programs[-1].outputs[0].shape[1]
    rt = EarlyExitRuntime(be, segments, [None] * len(segments), [0] * len(segments), val.images.shape[1:], num_classes,
                          max_batch)
    outs = rt.exit_outputs(np.ascontiguousarray(val.images.numpy()))
    logits = np.stack([o["logits"] for o in outs]).astype(np.float32)
    scores = np.stack([o["score"] for o in outs]).astype(np.float32)
    options: dict = {"confidences": scores}
    if cal.policy in ("search", "fractions"):
        options["kind"] = cal.score_kind
        options["temperatures"] = cal.temperatures
        if cal.policy == "fractions" and "scheme" in cal.policy_params:
            options["scheme"] = cal.policy_params["scheme"]
        if cal.policy == "fractions" and "quota" in cal.policy_params:  # int8 keeps the fp32 calibration's rule
            options["quota"] = cal.policy_params["quota"]
    if cal.policy == "fixed":
        options["threshold"] = cal.policy_params["threshold"]
    if cal.cost_unit == "ms":  # the latency table was measured on the float programs
        raise ConfigError("int8 with a millisecond budget is not supported yet", got=cal.budget.describe(),
                          expected="a MACs budget", hint="calibrate for MACs, export int8, then profile it")
    new = policies.calibrate(logits, val.labels.numpy(), cal.costs, cal.budget, policy=cal.policy,
                             reference_cost=cal.reference_cost, **options)
    new.provenance = {**cal.provenance, "recalibrated_for": "int8", "fp32_calibration_sha256": source_sha256}
    return new


def reference_outputs(programs, input_shape, n: int = 8, seed: int = 1234) -> tuple[np.ndarray, list[dict]]:
    """Test vectors: `n` seeded inputs and every exit's logits and score from the eager modules (what every lowered
    file must reproduce)."""
    from edgeexit.export import chain_outputs

    x = torch.randn((n, *input_shape), generator=torch.Generator().manual_seed(seed))
    per_exit = [{"logits": outs["logits"].numpy(), "score": outs["score"].numpy()}
                for _, outs in chain_outputs(programs, x)]
    return x.numpy(), per_exit


def _versions(formats) -> dict[str, str]:
    """The versions of the tools that wrote the bundle's files."""
    import importlib.metadata

    names = ["torch", "onnx", "onnxruntime", "onnxscript"] + (["executorch"] if "pte" in formats else [])
    return {"python": platform.python_version(), **{n: importlib.metadata.version(n) for n in names}}


def _ensemble(ckpt: dict, num_exits: int) -> dict:
    """AEP ensemble weights beta of the bundle's exits: the pruned subset's, or the training mode's."""
    from edgeexit.aep import aep_weights

    if ckpt.get("ensemble"):
        return ckpt["ensemble"]
    mode = ckpt["train_config"].get("weight_mode", "unif")
    return {"mode": mode, "weights": aep_weights(num_exits, mode, "output").tolist()}


def test_split(bundle: Bundle, split: str = "test", limit: int | None = None):
    """Images and labels of a split of the data the bundle was trained on (edgeexit.evaluate.test_split)."""
    from edgeexit.evaluate import test_split as split_of

    return split_of(bundle, split, limit)
