"""`edgeexit` command line: build does everything; train, calibrate, export and eval run one stage each."""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeexit.cli_guard import GuardedGroup
from edgeexit.errors import ConfigError, EdgeExitError

# GuardedGroup: the one top-level handler, no command ends in a traceback for a full disk or a bad path
app = typer.Typer(cls=GuardedGroup, add_completion=False, no_args_is_help=True,
                  help="Turn an image classifier into an early-exit network and ship it to edge devices.")
console = Console()

DATASET = typer.Option("fashion-mnist", help="fashion-mnist | synthetic | folder:/path | cifar10:/path")
BACKEND = typer.Option(None, help="onnxruntime | onnxruntime-cuda | torch | torch-cuda (default: the bundle's target's)")
RUN_DIR = typer.Option(Path("runs/default"), "--run-dir", help="where checkpoint, calibration and bundle go")


def _fail(err: EdgeExitError) -> None:
    console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)  # no line breaks inside paths and commands
    raise typer.Exit(2)


def _budget(budget: str):
    """'0.5' (fraction of full MACs), '12e6macs', '5ms@jetson', or a preset name from calibration/budgets."""
    from edgeexit.calibrate.budget import Budget, load_budget_preset

    text = budget.strip().lower()
    try:
        if text.endswith("macs"):
            return Budget("macs", float(text[:-4]))
        if "ms" in text and text.split("@")[0].endswith("ms"):
            value, _, target = text.partition("@")
            return Budget("ms", float(value[:-2]), target or None)
        return Budget("macs_fraction", float(text))
    except ValueError:
        return load_budget_preset(budget)


def _train_options(method, weight_mode, epochs, batch_size, lr, patience, seed, max_steps, **options):
    from edgeexit.train.trainer import TrainConfig

    return TrainConfig(method=method, weight_mode=weight_mode, epochs=epochs, batch_size=batch_size, lr=lr,
                       patience=patience, seed=seed, max_steps_per_epoch=max_steps, **options)


METHOD = typer.Option("aep", help="aep (weighted ensemble, papers/000) | eenet (confidence + cost L_v2, papers/002) | "
                                  "budget (bi-level gater, papers/003)")
HEAD = typer.Option(None, help="aep | plain | pool | bnpool (default: pool for --method eenet, else aep)")
LAM = typer.Option(None, "--lam", help="cost weight λ (default: 1 for eenet, 2 for budget)")
GATER_FEATURES = typer.Option("confidence,entropy", help="budget: the gater's inputs, from confidence,margin,entropy")
GATER_PERIOD = typer.Option(10, min=1, help="budget: network steps per gater step (papers/003: 10 on CIFAR, 100 on ImageNet)")
DEVICE = typer.Option("auto", help="auto | cpu | cuda | cuda:N; under torchrun each rank takes cuda:LOCAL_RANK")
WEIGHTS = typer.Option(None, help="'imagenet' (efficientnet_lite0's shipped weights), or your trained model's weights: "
                                  "a state_dict file (torch.save(model.state_dict())) or a torch.export archive (a whole "
                                  "pickled model or a TorchScript archive is refused: loading it could run code)")
MODEL = typer.Option(None, help="your own model instead of --backbone: package.module:function (returns an "
                                "nn.Module) or torchvision:<name>; name its split points with --exits layer1,layer2")
MODEL_KWARGS = typer.Option(None, help="keyword arguments of --model as JSON, e.g. '{\"num_classes\": 10}'")
AGAIN_MODEL = typer.Option(None, help="a checkpoint of your own model (package.module:function): pass the same --model "
                                      "again; edgeexit never calls a function named in a file")
AGAIN_MODEL_KWARGS = typer.Option(None, help="with --model: its keyword arguments as JSON (default: the checkpoint's; "
                                             "if given, they must equal them)")
FREEZE_BACKBONE = typer.Option(False, help="train the exit heads only: the backbone's weights and BatchNorm statistics "
                                           "stay as in --weights, so the final exit answers as your model does")
# numeric bounds: click refuses what is out of range with a usage error (exit code 2) before anything runs
SEED = typer.Option(0, min=0, max=2**32 - 1, help="seeds weights, data order and splits (numpy takes < 2^32)")
LIMIT = typer.Option(None, min=1, help="use the first N samples of the split")
UNFREEZE_AFTER = typer.Option(None, min=1, help="with --freeze-backbone: after N epochs of heads only, train everything jointly")


def _passed_model(model, model_kwargs):
    """The --model (--model-kwargs) passed again to a stage that rebuilds a checkpoint's model."""
    from edgeexit.models.user import PassedModel

    if model is None and model_kwargs is None:
        return None
    cfg = _model_config("", "stages", None, 32, None, "aep", "", model, model_kwargs)  # the same checks as train's
    return PassedModel(model, cfg.model_kwargs)


def _model_config(backbone, exits, head, image_size, weights, method, gater_features, model=None, model_kwargs=None):
    """The model options; the head defaults to the method's (EENet's Pool block for eenet), the gater is added for
    the budget method only."""
    import json

    from edgeexit.models import ModelConfig

    kwargs = None
    if model_kwargs:
        try:
            kwargs = json.loads(model_kwargs)
        except json.JSONDecodeError as err:
            raise ConfigError("--model-kwargs is not valid JSON", got=model_kwargs, expected='e.g. {"num_classes": 10}',
                              hint="quote it for the shell: --model-kwargs '{\"num_classes\": 10}'") from err
        if not isinstance(kwargs, dict):
            raise ConfigError("--model-kwargs must be a JSON object", got=model_kwargs, expected='{"name": value, ...}')
        if model is None:
            raise ConfigError("--model-kwargs needs --model", got=model_kwargs, expected="--model package.module:function")
    return ModelConfig(backbone=model or backbone, exits=_exits(exits), head=head or ("pool" if method == "eenet" else "aep"),
                       image_size=image_size, weights=str(weights) if weights else None,
                       gater_features=gater_features if method == "budget" else None, model=model, model_kwargs=kwargs)


@app.command()
def train(
    run_dir: Path = RUN_DIR,
    dataset: str = DATASET,
    backbone: str = typer.Option("resnet18", help="see `edgeexit backbones`"),
    exits: str = typer.Option("stages", help="stages | full | blocks | eenet:<pareto|golden|fine|linear|quadratic>:<n> "
                                              "| comma-separated block indices"),
    head: Optional[str] = HEAD,
    image_size: int = typer.Option(32, min=1, max=4096, help="input height and width; each backbone has a smallest"),
    method: str = METHOD,
    weight_mode: str = typer.Option("unif", help="AEP weights: desc | asc | mix | unif"),
    lam: Optional[float] = LAM,
    gater_features: str = GATER_FEATURES,
    gater_period: int = GATER_PERIOD,
    device: str = DEVICE,
    amp: bool = typer.Option(True, help="mixed precision (float16 autocast + GradScaler) on CUDA"),
    freeze_bn: bool = typer.Option(False, help="BatchNorm statistics fixed (fine-tuning with small batches)"),
    sync_bn: bool = typer.Option(False, help="SyncBatchNorm across torchrun ranks (CUDA only)"),
    epochs: int = typer.Option(100, min=1),
    batch_size: int = typer.Option(64, min=1),
    lr: float = typer.Option(1e-4),
    schedule: str = typer.Option("constant", help="learning rate: constant (the AEP paper) | cosine (annealed to 0)"),
    patience: int = typer.Option(12, min=1),
    seed: int = SEED,
    max_steps: Optional[int] = typer.Option(None, min=1, help="cap on steps per epoch (quick runs)"),
    limit_train: Optional[int] = LIMIT, limit_val: Optional[int] = LIMIT, limit_test: Optional[int] = LIMIT,
    weights: Optional[str] = WEIGHTS,
    model: Optional[str] = MODEL,
    model_kwargs: Optional[str] = MODEL_KWARGS,
    freeze_backbone: bool = FREEZE_BACKBONE,
    unfreeze_after: Optional[int] = UNFREEZE_AFTER,
    resume: bool = typer.Option(False, help="continue from run-dir/checkpoint.pt, with its settings"),
    adopt: bool = typer.Option(False, help="with --resume: go on with the settings given now where they differ from "
                                           "the checkpoint's (learning rate, schedule, batch size, limits...)"),
):
    """Train the exit network (AEP loss by default) and write RUN_DIR/checkpoint.pt.

    Data-parallel on several GPUs or nodes: `torchrun --nproc_per_node N -m edgeexit train ARGS`
    (ARGS as for this command; see edgeexit/train/distributed.py).
    """
    from edgeexit.pipeline import DataConfig, train_stage
    from edgeexit.rundir import RunDir

    try:
        if adopt and not resume:
            raise ConfigError("--adopt needs --resume", got="--adopt", expected="--resume --adopt",
                              hint="--adopt says which settings a resumed run follows; a new run takes the options given")
        data = DataConfig(dataset, image_size, seed, None, limit_train, limit_val, limit_test)
        model = _model_config(backbone, exits, head, image_size, weights, method, gater_features, model, model_kwargs)
        cfg = _train_options(method, weight_mode, epochs, batch_size, lr, patience, seed, max_steps, lam=lam,
                             gater_period=gater_period, device=device, amp=amp, freeze_bn=freeze_bn, sync_bn=sync_bn,
                             schedule=schedule, freeze_backbone=freeze_backbone, unfreeze_after=unfreeze_after)
        run = RunDir(run_dir)
        # under torchrun every rank runs this command; rank 0 writes the run directory, so rank 0 holds it
        with run.lock("train") if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext():
            result = train_stage(run, data, model, cfg, resume=resume, adopt=adopt)
    except EdgeExitError as err:
        _fail(err)
    if not result.is_main:
        return
    console.print(f"best epoch {result.best_epoch + 1}: val loss {result.best_val_loss:.4f}, per-exit val accuracy "
                  + " ".join(f"{a:.4f}" for a in result.val_exit_accuracy) + f"  ({result.seconds:.0f} s)")
    console.print(f"checkpoint: {result.checkpoint}")


def _exits(exits: str):
    """A placement name, comma-separated block indices, or comma-separated block names / module paths."""
    text = exits.strip()
    if not text:
        return "stages"
    if text in ("stages", "full", "blocks") or text.startswith("eenet:"):
        return text
    if not text[0].isdigit():
        return [name.strip() for name in text.split(",") if name.strip()]
    try:
        return [int(i) for i in text.split(",")]
    except ValueError:
        raise ConfigError("bad --exits", got=exits, expected="stages | full | blocks | eenet:<dist>:<n> | e.g. 2,5,8",
                          hint="block indices are listed by `edgeexit backbones`") from None


def _trained(run) -> Path:
    """The checkpoint later stages use: RUN/pruned.pt when `edgeexit prune` cut one from RUN/checkpoint.pt, else
    RUN/checkpoint.pt (RunDir.trained refuses a stale pruned.pt)."""
    chosen = run.trained()
    console.print(f"[dim]using {chosen}[/]")
    return chosen


@app.command()
def prune(
    run_dir: Path = RUN_DIR,
    mode: Optional[str] = typer.Option(None, help="AEP weight mode desc | asc | mix | unif (default: the training mode)"),
    limit: Optional[int] = typer.Option(None, min=1, help="use the first N validation samples"),
    show: int = typer.Option(10, min=1, help="how many subsets to list"),
    budget: Optional[str] = typer.Option(None, help="keep the subset with the best early-exit accuracy under this "
                                                    "MACs budget (0.5, 20e6macs) instead of AEP's best ensemble"),
    model: Optional[str] = AGAIN_MODEL,
    model_kwargs: Optional[str] = AGAIN_MODEL_KWARGS,
):
    """Prune to the best exit subset on validation (AEP's ensemble rule, or under a budget); writes RUN/pruned.pt(.json)."""
    from edgeexit.pipeline import prune_stage
    from edgeexit.rundir import RunDir

    try:
        run = RunDir(run_dir)
        with run.lock("prune"):
            res = prune_stage(run, mode=mode, limit=limit, budget=_budget(budget) if budget else None,
                              model=_passed_model(model, model_kwargs))
    except EdgeExitError as err:
        _fail(err)
    console.print(prune_table(res, show))
    console.print(f"{prune_summary(res)}  -> {run_dir / 'pruned.pt'}")


def prune_table(res, show: int) -> Table:
    budgeted = res.objective == "budget"
    what = f"early-exit accuracy at {res.budget_macs:,.0f} MACs" if budgeted else f"AEP ensemble ({res.mode})"
    t = Table(title=f"pruning by {what}: best {show} of {len(res.subsets)} subsets, {res.n_samples} val samples")
    cols = ["exits", "accuracy"] + (["ensemble accuracy", "expected MACs"] if budgeted else []) + ["params", "MACs"]
    for col in cols:
        t.add_column(col, justify="right")
    rows = [r for r in res.subsets if r["accuracy"] is not None]
    for row in sorted(rows, key=lambda r: (-r["accuracy"], r["macs"]))[:show]:
        extra = [f"{row['ensemble_accuracy']:.4f}", f"{row['expected_macs']:,.0f}"] if budgeted else []
        t.add_row(str(row["exits"]), f"{row['accuracy']:.4f}", *extra, f"{row['params']:,.0f}", f"{row['macs']:,.0f}")
    return t


def prune_summary(res) -> str:
    full = res.full
    return (f"kept exits {res.kept_exits} of {len(full['exits'])}: val accuracy {res.accuracy:.4f} (all exits "
            f"{full['accuracy']:.4f}), params {res.params / full['params']:.3f}x, MACs {res.macs / full['macs']:.3f}x")


@app.command()
def calibrate(
    run_dir: Path = RUN_DIR,
    budget: str = typer.Option("0.5", help="fraction of full MACs (0.5), '20e6macs', '5ms@cpu', or a preset name"),
    policy: str = typer.Option("search", help="search | fractions | fixed | gater"),
    score: Optional[str] = typer.Option(None, help="max_softmax (default) | margin | neg_entropy | confidence | gater; "
                                                   "fixed uses confidence, gater the gater's P_k"),
    recipe: str = typer.Option("default", help="calibration-set recipe in calibration/recipes (default, quick) or a path"),
    threshold: float = typer.Option(0.5, min=0.0, max=1.0, help="T of the fixed policy (EENet confidence, in [0, 1])"),
    quota: str = typer.Option("rounded", help="fractions policy: rounded (round the running total of exits) | msdnet "
                                             "(MSDNet's reference rule: floor each exit's quota, held fixed)"),
    limit: Optional[int] = typer.Option(None, min=1, help="calibrate on the first N samples of the recipe's split"),
    temperature: bool = typer.Option(True, help="temperature scaling per exit, fitted on the calibration set (NLL) "
                                                "before the thresholds (search / fractions with a logit score)"),
    model: Optional[str] = AGAIN_MODEL,
    model_kwargs: Optional[str] = AGAIN_MODEL_KWARGS,
):
    """Choose exit thresholds for a budget; writes RUN/calibration.json and the accuracy/cost curves (JSON, PNG)."""
    from edgeexit.pipeline import calibrate_stage, read_profile
    from edgeexit.rundir import RunDir

    try:
        run = RunDir(run_dir)
        with run.lock("calibrate"):
            b = _budget(budget)
            checkpoint = _trained(run)
            profile = read_profile(run, checkpoint) if b.kind == "ms" else None
            cal = calibrate_stage(run, checkpoint, budget=b, policy=policy, score=score, recipe=recipe, limit=limit,
                                  threshold=threshold, profile=profile, temperature=temperature, quota=quota,
                                  model=_passed_model(model, model_kwargs))
    except EdgeExitError as err:
        _fail(err)
    t = Table(title=f"calibration ({cal.policy}, {cal.score_kind}, {cal.n_samples} samples)")
    for col in ("exit", "threshold", "fraction exiting", "accuracy alone", f"cost ({cal.cost_unit})"):
        t.add_column(col, justify="right")
    for k, (th, fr, acc, c) in enumerate(zip(cal.thresholds, cal.exit_fractions, cal.exit_accuracy, cal.costs)):
        t.add_row(str(k), f"{th:.4f}", f"{fr:.3f}", f"{acc:.4f}", f"{c:,.3f}" if cal.cost_unit == "ms" else f"{c:,.0f}")
    console.print(t)
    if cal.calibration_error:
        console.print(temperature_table(cal))
    for w in cal.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    console.print(f"expected accuracy {cal.accuracy:.4f} at {_cost_summary(cal)} "
                  f"-> {run_dir / 'calibration.json'}, {run_dir / 'curves.png'}")


def temperature_table(cal) -> Table:
    """Each exit's temperature and its expected calibration error / NLL before and after scaling."""
    e = cal.calibration_error
    t = Table(title=f"temperature scaling (fitted by NLL on the {cal.n_samples} calibration samples)")
    for col in ("exit", "temperature", "ECE before", "ECE after", "NLL before", "NLL after"):
        t.add_column(col, justify="right")
    for k, temp in enumerate(cal.temperatures or []):
        t.add_row(str(k), f"{temp:.3f}", f"{e['ece_before'][k]:.4f}", f"{e['ece_after'][k]:.4f}",
                  f"{e['nll_before'][k]:.4f}", f"{e['nll_after'][k]:.4f}")
    return t


def _cost_summary(cal) -> str:
    """Mean cost against the original unsplit model (a pruned network's last exit is not the yardstick)."""
    if cal.cost_unit == "ms":
        return f"{cal.mean_cost:.3f} ms per image ({cal.cost_fraction:.3f}x the unsplit model's time)"
    return f"{cal.cost_fraction:.3f}x the original model's MACs"


@app.command()
def profile(
    run_dir: Path = RUN_DIR,
    backend: Optional[str] = BACKEND,
    device: str = typer.Option("local", help="local | ssh://[user@]host[:port][?python=PATH&identity=KEY"
                                             "&known_hosts=FILE] | adb://SERIAL"),
    batches: Optional[str] = typer.Option(None, help="batch sizes, e.g. 1,8 (default: 1 and the bundle's largest)"),
    rounds: int = typer.Option(30, min=1, help="alternating rounds; each figure is a median over rounds"),
    calls: int = typer.Option(3, min=1, help="back-to-back calls per entry and round (their median)"),
    runner: Optional[str] = typer.Option(None, help="python | cpp (local: python; adb: cpp)"),
    runner_binary: Optional[Path] = typer.Option(None, help="the C++ runner (edgeexit_runner) for cpp / adb"),
    etdump: bool = typer.Option(False, help="ExecuTorch bundles: also per-segment and per-operator times from ETDump"),
):
    """Per-exit latency of RUN/bundle on a device and backend (default: this machine, the bundle's own backend),
    the unsplit model timed beside it, the run's own noise; writes RUN/profile.json and attaches it to the bundle."""
    from edgeexit import jsonio
    from edgeexit.bundle import REPORTS, add_files, load_bundle
    from edgeexit.devices import parse_device
    from edgeexit.profile import profile_bundle
    from edgeexit.rundir import RunDir

    try:
        run = RunDir(run_dir)
        dev = parse_device(device, runner)
        sizes = _batch_list(batches)  # checked before anything is opened
        with run.lock("profile"):
            bundle = load_bundle(run.bundle)
            console.print(f"profiling {bundle.root.name} on {escape(dev.describe())} ({rounds} rounds)...")
            prof = profile_bundle(bundle, backend=backend, device=dev, batches=sizes, rounds=rounds,
                                  calls=calls, runner_binary=runner_binary)
            if etdump:
                from edgeexit.etdump import etdump_timings

                prof["etdump"] = etdump_timings(bundle, batch=prof["batch_size"])
            jsonio.write_json(run.profile, prof)
            add_files(bundle, {f"{REPORTS}profile.json": jsonio.dumps(prof)}, run.bundle)
    except EdgeExitError as err:
        _fail(err)
    for b in prof["batches"]:
        console.print(profile_table(prof, b))
    _noise_note(prof)
    if "etdump" in prof:
        console.print(etdump_table(prof["etdump"]))


def _batch_list(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ConfigError("--batches takes integers", got=text, expected="e.g. 1,8") from None
    if not sizes or min(sizes) < 1:
        raise ConfigError("--batches takes batch sizes >= 1", got=text, expected="e.g. 1,8")
    return sizes


def _noise_note(prof: dict) -> None:
    worst = max(n["noise"] for n in prof["noise"].values())
    if prof["trusted"]:
        console.print(f"noise of this profile (the unsplit model timed twice): {100 * worst:.1f} % "
                      f"(bound {100 * next(iter(prof['noise'].values()))['bound']:.0f} %)")
    else:
        console.print(f"[yellow]this profile is noisy: the unsplit model timed twice differs by {100 * worst:.1f} %; "
                      "differences smaller than that mean nothing. Profile again on an idle device.[/]")


def etdump_table(timings: dict) -> Table:
    t = Table(title=f"ExecuTorch ETDump, batch {timings['batch_size']} (median of {timings['runs']} runs)")
    for col in ("method", "ms", "p90 ms", "operators", "slowest operator"):
        t.add_column(col, justify="right")
    for m in timings["methods"]:
        top = m["operators"][0] if m["operators"] else {"name": "-", "ms": 0.0}
        t.add_row(escape(m["method"]), f"{m['ms']:.3f}", f"{m['p90_ms']:.3f}", str(m["operator_count"]),
                  f"{escape(top['name'])} {top['ms']:.3f} ms")
    return t


def profile_table(prof: dict, batch: str | None = None) -> Table:
    batch = batch or str(prof["batch_size"])
    tb = prof["batches"][batch]
    t = Table(title=f"per-exit latency, {escape(prof['backend'])} on {escape(prof['device'])}, batch {batch}: p50 ms over "
                    f"{prof['rounds']} rounds, spread (p90-p10)/p50")
    for col in ("exit", "after", "answer here", "spread", "/ full", "MACs / full", "segment", "head", "truncated"):
        t.add_column(col, justify="right")

    def ms(s):
        return "-" if s is None else f"{s['p50_ms']:.3f}"

    for e in tb["exits"]:
        c = e["cumulative"]
        t.add_row(str(e["index"]), escape(e["name"]), ms(c), f"{100 * c['spread']:.0f} %", f"{e['time_fraction']:.3f}",
                  f"{e['macs_fraction']:.3f}", ms(e["segment"]), ms(e["head"]), ms(e["static"]))
    f = tb["full"]
    t.add_row("full", "unsplit", ms(f), f"{100 * f['spread']:.0f} %", "1.000", "1.000", "", "", "")
    ff = tb["forced_final"]
    t.caption = (f"forced final exit {ff['ratio']:.3f}x the unsplit model (heads {100 * ff['heads_fraction']:.1f} %); "
                 f"noise {100 * tb['noise']['noise']:.1f} %")
    return t


@app.command()
def export(
    run_dir: Path = RUN_DIR,
    target: str = typer.Option("cpu", help="see `edgeexit targets`"),
    precision: Optional[str] = typer.Option(None, help="one of the target's precisions (default: its first)"),
    out: Optional[Path] = typer.Option(None, help="bundle path (default RUN_DIR/bundle); must be absent, empty or a bundle"),
    model: Optional[str] = AGAIN_MODEL,
    model_kwargs: Optional[str] = AGAIN_MODEL_KWARGS,
):
    """Split into torch.export programs, lower them for the target (checked against torch), write the verified bundle."""
    from edgeexit.pipeline import export_stage
    from edgeexit.rundir import RunDir

    try:
        run = RunDir(run_dir)
        with run.lock("export"):
            bundle = export_stage(run, _trained(run), out, target=target, precision=precision,
                                  model=_passed_model(model, model_kwargs))
    except EdgeExitError as err:
        _fail(err)
    m = bundle.manifest
    console.print(f"bundle: {out or run.bundle} -> {bundle.root.name} ({len(bundle.exits)} segments, target {m.target}, "
                  f"{m.format} {m.precision}, formats {', '.join(m.formats)})")
    _engines_hint(bundle, out or run.bundle)


def _engines_hint(bundle, path: Path) -> bool:
    """Say the command that builds a TensorRT bundle's engines on its device; whether there was one to say."""
    from edgeexit.engines import engines_to_build

    command = engines_to_build(bundle, path)
    if command:
        console.print(f"[bold]on the {escape(bundle.manifest.target)} itself:[/] {escape(command)}  (verifies the bundle, "
                      "builds its TensorRT engines into a new version of it, then profiles them there)", soft_wrap=True)
    return command is not None


@app.command()
def engines(
    bundle: Path = typer.Argument(..., help="the bundle to build engines for, e.g. RUN/bundle"),
    out: Optional[Path] = typer.Option(None, help="where the new bundle version goes (default: BUNDLE itself)"),
    trtexec: Optional[str] = typer.Option(None, help="build with this trtexec (JetPack: /usr/src/tensorrt/bin/trtexec) "
                                                     "instead of TensorRT's Python builder"),
    workspace_mb: Optional[int] = typer.Option(None, min=1, help="builder workspace limit in MiB"),
    compute_capability: Optional[list[str]] = typer.Option(None, help="TensorRT-RTX without a GPU: build for this "
                                                                      "compute capability (e.g. 8.6; repeatable)"),
    flavour: Optional[str] = typer.Option(None, help="tensorrt | tensorrt_rtx (default: tensorrt if importable)"),
    profile_after: bool = typer.Option(True, "--profile/--no-profile", help="profile the engines afterwards "
                                                                            "(needs a CUDA device and RUN/bundle)"),
):
    """Verify a jetson / cuda bundle, build its TensorRT engines here from its ONNX into a new version of the bundle,
    then profile them (run it on the Jetson or GPU host that will run them)."""
    import subprocess

    from edgeexit.engines import build_engines, describe, profile_step

    dest = out or bundle
    try:
        built = build_engines(bundle, dest, compute_capabilities=compute_capability, workspace_mb=workspace_mb,
                              flavour=flavour, trtexec=trtexec, log=lambda line: console.print(escape(line)))
    except EdgeExitError as err:
        _fail(err)
    console.print(escape(describe(built, dest)), soft_wrap=True)
    run_dir, note = profile_step(dest) if profile_after else (None, "")
    if note:
        console.print(escape(note), soft_wrap=True)
    if run_dir is not None:  # its own process, as the user would run it: the profile takes the run directory's lock
        raise typer.Exit(subprocess.call([sys.executable, "-m", "edgeexit", "profile", "--run-dir", str(run_dir)]))


@app.command("eval")
def eval_(
    bundle: Path = typer.Argument(..., help="a bundle directory"),
    backend: Optional[str] = BACKEND,
    split: str = typer.Option("test"),
    batch_size: int = typer.Option(64, min=1),
    limit: Optional[int] = typer.Option(None, min=1),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the figures as JSON"),
):
    """Accuracy, exit histogram, MACs and wall time of the bundle against the unsplit model (same backend)."""
    from edgeexit import jsonio
    from edgeexit.pipeline import evaluate_bundle
    from edgeexit.report import summary_table

    try:
        result = evaluate_bundle(bundle, backend=backend, split=split, batch_size=batch_size, limit=limit)
    except EdgeExitError as err:
        _fail(err)
    console.print(summary_table(result))
    if json_out:
        jsonio.write_json(json_out, result)


@app.command()
def build(
    target: str = typer.Option("cpu", help="see `edgeexit targets`"),
    run_dir: Path = RUN_DIR,
    dataset: str = DATASET,
    backbone: str = typer.Option("resnet18"),
    exits: str = typer.Option("stages"),
    head: Optional[str] = HEAD,
    image_size: int = typer.Option(32, min=1, max=4096, help="input height and width; each backbone has a smallest"),
    method: str = METHOD,
    weight_mode: str = typer.Option("unif"),
    lam: Optional[float] = LAM,
    gater_features: str = GATER_FEATURES,
    gater_period: int = GATER_PERIOD,
    device: str = DEVICE,
    weights: Optional[str] = WEIGHTS,
    model: Optional[str] = MODEL,
    model_kwargs: Optional[str] = MODEL_KWARGS,
    freeze_backbone: bool = FREEZE_BACKBONE,
    unfreeze_after: Optional[int] = UNFREEZE_AFTER,
    temperature: bool = typer.Option(True, help="temperature scaling per exit, fitted on the calibration set (NLL) "
                                                "before the thresholds (logit scores)"),
    epochs: int = typer.Option(3, min=1, help="short by default so the whole job fits ~10 min on 2 cores"),
    lr: float = typer.Option(1e-3),
    schedule: str = typer.Option("cosine", help="learning rate: cosine (annealed to 0, good for short runs) | constant"),
    batch_size: int = typer.Option(64, min=1),
    budget: str = typer.Option("0.6"),
    policy: Optional[str] = typer.Option(None, help="default: search for aep, fixed (h >= 0.5) for eenet, gater "
                                                    "(P_k >= 0.5) for budget"),
    score: Optional[str] = typer.Option(None, help="default: max_softmax for aep, confidence for eenet, gater for budget"),
    seed: int = SEED,
    max_steps: Optional[int] = typer.Option(None, min=1),
    limit_train: Optional[int] = LIMIT, limit_val: Optional[int] = LIMIT, limit_test: Optional[int] = LIMIT,
    eval_batch_size: int = typer.Option(64, min=1),
    precision: Optional[str] = typer.Option(None, help="one of the target's precisions (default: its first)"),
    prune: bool = typer.Option(True, help="AEP pruning to the best exit subset (aep method only)"),
    profile_device: str = typer.Option("local", help="where to profile: local | ssh://user@host | adb://SERIAL"),
):
    """train -> prune -> calibrate -> export -> profile -> measure: a bundle with its report, in one go."""
    from edgeexit import jsonio
    from edgeexit.calibrate import Budget
    from edgeexit.pipeline import (
        DataConfig,
        calibrate_stage,
        evaluate_bundle,
        export_stage,
        prune_stage,
        train_stage,
    )
    from edgeexit.profile import profile_bundle
    from edgeexit.report import report_table, summary_table, write_report
    from edgeexit.rundir import RunDir
    from edgeexit.train.distributed import launched_by_torchrun

    t0 = time.time()
    try:
        if launched_by_torchrun():
            raise ConfigError("build does not run under torchrun", got="RANK/WORLD_SIZE set",
                              expected="one process", hint="train with torchrun (-m edgeexit train), then "
                              "run `edgeexit calibrate` and `edgeexit export` once")
        # Every option is checked before the first epoch: a typo must not cost a training run.
        data = DataConfig(dataset, image_size, seed, None, limit_train, limit_val, limit_test)
        model = _model_config(backbone, exits, head, image_size, weights, method, gater_features, model, model_kwargs)
        cfg = _train_options(method, weight_mode, epochs, batch_size, lr, 12, seed, max_steps, lam=lam,
                             gater_period=gater_period, device=device, schedule=schedule,
                             freeze_backbone=freeze_backbone, unfreeze_after=unfreeze_after)
        b, policy, score, precision = _check_build_options(target, precision, budget, policy, score, method,
                                                           eval_batch_size)
        passed = _passed_model(model.model, model_kwargs)  # the later stages rebuild the --model given here
        run = RunDir(run_dir)
        with run.lock("build"):
            console.rule(f"[bold]1/6 train ({method})")
            result = train_stage(run, data, model, cfg)
            console.print("per-exit val accuracy " + " ".join(f"{a:.4f}" for a in result.val_exit_accuracy))
            console.rule("[bold]2/6 prune")
            if prune and method == "aep" and b.kind != "ms":
                pr = prune_stage(run, budget=b if policy == "search" else None, score=score, model=passed)
                console.print(prune_table(pr, 5))
                console.print(prune_summary(pr))
                if freeze_backbone and pr.kept_exits[-1] != len(pr.full["exits"]) - 1:
                    # the pruned network would end before the user's classifier, whose answers --freeze-backbone keeps
                    run.pruned.unlink(missing_ok=True)
                    run.pruned_json.unlink(missing_ok=True)
                    console.print("[yellow]not pruned: that subset drops your model's own classifier, the final exit "
                                  "--freeze-backbone keeps[/]")
            else:
                run.pruned.unlink(missing_ok=True)
                console.print("skipped (--no-prune, a method other than aep, or a millisecond budget)")
            trained = run.trained()
            console.rule("[bold]3/6 calibrate")
            backend = None
            prof = None
            if b.kind == "ms":  # a latency budget needs the measured table: export once, profile, then calibrate
                calibrate_stage(run, trained, budget=Budget("macs_fraction", 1.0), policy=policy, score=score,
                                curves=False, temperature=temperature, model=passed)
                first = export_stage(run, trained, target=target, precision=precision, model=passed)
                backend = _measure_backend(first)
                prof = profile_bundle(first, backend=backend)
                jsonio.write_json(run.profile, prof)
            cal = calibrate_stage(run, trained, budget=b, policy=policy, score=score, profile=prof,
                                  temperature=temperature, model=passed)
            console.print(f"thresholds {[round(t, 4) for t in cal.thresholds]}: expected accuracy {cal.accuracy:.4f} "
                          f"at {_cost_summary(cal)}")
            if cal.calibration_error:
                console.print(temperature_table(cal))
            console.rule("[bold]4/6 export")
            bundle = export_stage(run, trained, target=target, precision=precision, model=passed)
            backend = backend or _measure_backend(bundle)
            console.rule(f"[bold]5/6 profile ({backend}, {profile_device})")
            prof = profile_bundle(bundle, backend=backend, device=profile_device)
            jsonio.write_json(run.profile, prof)
            console.print(profile_table(prof))
            _noise_note(prof)
            console.rule(f"[bold]6/6 measure and report ({backend})")
            ev = evaluate_bundle(bundle.root, backend=backend, batch_size=eval_batch_size)
            jsonio.write_json(run.eval_json, ev)
            rep, bundle = write_report(run, ev=ev, prof=prof)
    except EdgeExitError as err:
        _fail(err)
    console.print(summary_table(ev, title=f"{backbone} on {dataset}, target {target}"))
    console.print(report_table(rep))
    console.print(escape(rep["static_baseline"]["verdict"]))
    engines_first = _engines_hint(bundle, run.bundle)  # `edgeexit engines` builds them, then profiles on the device
    if not engines_first and profile_device == "local" and _profiles_on_device(target):
        console.print(f"[bold]on the {target} itself:[/] edgeexit profile --run-dir {run_dir} --device "
                      f"{'adb://SERIAL --runner-binary edgeexit_runner' if target in ('android', 'ios') else 'ssh://user@host'}"
                      f" && edgeexit report {run_dir}  (this build measured {backend} on this machine)")
    console.print(f"bundle: {run.bundle} -> {bundle.root.name}  (report/ inside; {run.report_md})  "
                  f"total {time.time() - t0:.0f} s")


def _profiles_on_device(target: str) -> bool:
    from edgeexit.targets import load_target

    return load_target(target).profile == "device"


def _check_build_options(target, precision, budget, policy, score, method, eval_batch_size):
    """(budget, policy, score, precision) once every build option is known to be usable; the error otherwise."""
    from edgeexit.calibrate import POLICIES, SCORE_KINDS
    from edgeexit.pipeline import exportable, policy_score

    _, precision, _ = exportable(target, precision)
    b = _budget(budget)
    policy = policy or {"eenet": "fixed", "budget": "gater"}.get(method, "search")
    if policy not in POLICIES:
        raise ConfigError("unknown calibration policy", got=policy, expected=" | ".join(POLICIES))
    if score is not None and score not in SCORE_KINDS:
        raise ConfigError("unknown exit score", got=score, expected=" | ".join(SCORE_KINDS))
    score = policy_score(policy, score, default={"eenet": "confidence", "budget": "gater"}.get(method, "max_softmax"))
    if score == "confidence" and method == "aep":
        raise ConfigError("the confidence score needs EENet exit blocks", got="--method aep",
                          expected="--method eenet", hint="score AEP exits by max_softmax, margin or neg_entropy")
    if score == "gater" and method != "budget":
        raise ConfigError("the gater score needs a gater", got=f"--method {method}", expected="--method budget")
    if b.kind == "ms" and b.target not in (None, "cpu"):
        raise ConfigError("build measures latency on this host", got=budget, expected="a MACs budget, or N ms@cpu",
                          hint=f"for {b.target}, profile on the device and calibrate there with `edgeexit calibrate`")
    if eval_batch_size < 1:
        raise ConfigError("--eval-batch-size must be >= 1", got=eval_batch_size)
    return b, policy, score, precision


def _measure_backend(bundle) -> str:
    """The bundle's own backend when it can run here; else onnxruntime on this CPU, said out loud."""
    from edgeexit.runtime import default_backend, make_backend

    try:
        name = default_backend(bundle)
        make_backend(name).close()
        return name
    except EdgeExitError as err:
        console.print(f"[yellow]target {bundle.manifest.target} cannot run here ({escape(err.what)}); "
                      "measuring on onnxruntime (CPU emulation)[/]")
        return "onnxruntime"


@app.command()
def report(run_dir: Path = typer.Argument(Path("runs/default"), help="a run directory")):
    """The savings report of RUN/bundle again from its evaluation, profile and calibration: RUN/report.md,
    report.json and PNGs, attached to the bundle (report/)."""
    from edgeexit.report import report_table, write_report
    from edgeexit.rundir import RunDir

    try:
        run = RunDir(run_dir)
        with run.lock("report"):
            rep, bundle = write_report(run)
    except EdgeExitError as err:
        _fail(err)
    console.print(report_table(rep))
    console.print(escape(rep["static_baseline"]["verdict"]))
    console.print(f"{run.report_md}, {run.report_json} and PNGs; attached to {bundle.root.name}/report/")


@app.command()
def compare(
    bundle: Path = typer.Argument(..., help="a bundle directory"),
    backends: Optional[str] = typer.Option(None, help="comma-separated (default: every backend available here)"),
    samples: int = typer.Option(1000, min=0, help="test-split images besides the bundle's test vectors"),
    tolerance: Optional[float] = typer.Option(None, min=0.0, help="max |Δlogits| (default: by the bundle's precision)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the comparison as JSON"),
):
    """Every backend on the same inputs: max |Δlogits| per exit, exit-decision agreement; exit code 1 on failure."""
    from edgeexit import jsonio
    from edgeexit.bundle import load_bundle
    from edgeexit.compare import compare_backends
    from edgeexit.pipeline import test_split

    try:
        if tolerance is not None and not math.isfinite(tolerance):
            raise ConfigError("--tolerance must be a finite number >= 0", got=tolerance, expected="e.g. 1e-4")
        b = load_bundle(bundle)
        images = test_split(b, "test", samples)[0] if samples > 0 else None
        names = [n.strip() for n in backends.split(",") if n.strip()] if backends else None
        res = compare_backends(b, names, images=images, tolerance=tolerance)
    except EdgeExitError as err:
        _fail(err)
    first = res.backends[0]
    t = Table(title=f"compare against {first}: {res.vectors} test vectors + {res.samples} test images, "
                    f"tolerance {res.tolerance:g}")
    t.add_column("exit")
    for name in res.backends[1:]:
        t.add_column(f"max |Δlogits| {name}", justify="right")
    for name in res.backends:
        t.add_column(f"vs vectors {name}", justify="right")
    for e in res.exits:
        t.add_row(f"{e['index']} {escape(e['name'])}", *[f"{e['max_abs_logits'][n]:.2e}" for n in res.backends[1:]],
                  *[f"{e['vs_vectors'][n]:.2e}" if n in e["vs_vectors"] else "-" for n in res.backends])
    console.print(t)
    for name, a in res.agreement.items():
        console.print(f"exit decisions of {name} equal to {first}'s: {100 * a:.2f} % (need >= {100 * res.min_agreement:.1f} %)")
    for method, failure in res.bundled.items():
        console.print(f"BundledProgram test case of {method}: " + ("passed" if failure is None else f"[red]failed[/] ({escape(failure)})"))
    if json_out:
        jsonio.write_json(json_out, res.to_dict())
    console.print("[bold green]PASS[/]" if res.passed else "[bold red]FAIL[/]")
    if not res.passed:
        raise typer.Exit(1)


@app.command()
def targets():
    """Every target in targets/*.toml: what it needs and whether it works on this machine."""
    from edgeexit.targets import targets_table

    try:
        rows = targets_table()
    except EdgeExitError as err:
        _fail(err)
    if not rows:
        _fail(ConfigError("no targets found", got="an empty targets folder", expected="targets/*.toml",
                          hint="set EDGEEXIT_TARGETS_DIR to a folder of target files"))
    t = Table(title="targets")
    for col in rows[0]:
        t.add_column(col)
    for r in rows:
        t.add_row(*[escape(", ".join(v)) if isinstance(v, (list, tuple))
                    else ("✅" if v is True else "❌" if v is False else escape(str(v))) for v in r.values()])
    console.print(t)


@app.command()
def backbones():
    """The backbones edgeexit has adapters for, with their exits."""
    from edgeexit.models import backbone, exit_blocks, list_backbones

    t = Table(title="backbones")
    for col in ("name", "blocks", "exits after (stages)", "full"):
        t.add_column(col)
    for name in list_backbones():
        try:
            bb = backbone(name, num_classes=10, in_channels=3)
        except EdgeExitError as err:  # e.g. efficientnet_lite0 without the `pretrained` extra
            t.add_row(name, "", escape(f"not available here: {err.hint or err.what}"), "")
            continue
        t.add_row(name, str(len(bb.blocks)), ", ".join(bb.block_names[i] for i in bb.stages),
                  ", ".join(bb.block_names[i] for i in exit_blocks(bb, "full")))
    console.print(t)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
