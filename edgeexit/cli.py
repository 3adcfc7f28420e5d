"""`edgeexit` command line: build does everything; train, calibrate, export and eval run one stage each."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgeexit.errors import BudgetError, ConfigError, EdgeExitError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Turn an image classifier into an early-exit network and ship it to edge devices.")
console = Console()

DATASET = typer.Option("fashion-mnist", help="fashion-mnist | synthetic | folder:/path | cifar10:/path")
RUN_DIR = typer.Option(Path("runs/default"), "--run-dir", help="where checkpoint, calibration and bundle go")


def _fail(err: EdgeExitError) -> None:
    console.print(f"[bold red]error:[/] {escape(str(err))}")
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
GATER_PERIOD = typer.Option(10, help="budget: network steps per gater step (papers/003: 10 on CIFAR, 100 on ImageNet)")
DEVICE = typer.Option("auto", help="auto | cpu | cuda | cuda:N; under torchrun each rank takes cuda:LOCAL_RANK")
WEIGHTS = typer.Option(None, help="'imagenet' (efficientnet_lite0's shipped weights) or a torchvision state_dict "
                                  "file to fine-tune from")


def _model_config(backbone, exits, head, image_size, weights, method, gater_features):
    """The model options; the head defaults to the method's (EENet's Pool block for eenet), the gater is added for
    the budget method only."""
    from edgeexit.models import ModelConfig

    return ModelConfig(backbone=backbone, exits=_exits(exits), head=head or ("pool" if method == "eenet" else "aep"),
                       image_size=image_size, weights=str(weights) if weights else None,
                       gater_features=gater_features if method == "budget" else None)


@app.command()
def train(
    run_dir: Path = RUN_DIR,
    dataset: str = DATASET,
    backbone: str = typer.Option("resnet18", help="see `edgeexit backbones`"),
    exits: str = typer.Option("stages", help="stages | full | blocks | eenet:<pareto|golden|fine|linear|quadratic>:<n> "
                                              "| comma-separated block indices"),
    head: Optional[str] = HEAD,
    image_size: int = typer.Option(32),
    method: str = METHOD,
    weight_mode: str = typer.Option("unif", help="AEP weights: desc | asc | mix | unif"),
    lam: Optional[float] = LAM,
    gater_features: str = GATER_FEATURES,
    gater_period: int = GATER_PERIOD,
    device: str = DEVICE,
    amp: bool = typer.Option(True, help="mixed precision (float16 autocast + GradScaler) on CUDA"),
    freeze_bn: bool = typer.Option(False, help="BatchNorm statistics fixed (fine-tuning with small batches)"),
    sync_bn: bool = typer.Option(False, help="SyncBatchNorm across torchrun ranks (CUDA only)"),
    epochs: int = typer.Option(100),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(1e-4),
    schedule: str = typer.Option("constant", help="learning rate: constant (the AEP paper) | cosine (annealed to 0)"),
    patience: int = typer.Option(12),
    seed: int = typer.Option(0),
    max_steps: Optional[int] = typer.Option(None, help="cap on steps per epoch (quick runs)"),
    limit_train: Optional[int] = typer.Option(None), limit_val: Optional[int] = typer.Option(None),
    limit_test: Optional[int] = typer.Option(None),
    weights: Optional[str] = WEIGHTS,
    resume: bool = typer.Option(False, help="continue from run-dir/checkpoint.pt"),
):
    """Train the exit network (AEP loss by default) and write RUN_DIR/checkpoint.pt.

    Data-parallel on several GPUs or nodes: `torchrun --nproc_per_node N -m edgeexit.train.distributed ARGS`
    (ARGS as for this command; see edgeexit/train/distributed.py).
    """
    from edgeexit.pipeline import DataConfig, train_stage

    try:
        data = DataConfig(dataset, image_size, seed, None, limit_train, limit_val, limit_test)
        model = _model_config(backbone, exits, head, image_size, weights, method, gater_features)
        cfg = _train_options(method, weight_mode, epochs, batch_size, lr, patience, seed, max_steps, lam=lam,
                             gater_period=gater_period, device=device, amp=amp, freeze_bn=freeze_bn, sync_bn=sync_bn,
                             schedule=schedule)
        result = train_stage(run_dir, data, model, cfg, resume=resume)
    except EdgeExitError as err:
        _fail(err)
    if not result.is_main:
        return
    console.print(f"best epoch {result.best_epoch + 1}: val loss {result.best_val_loss:.4f}, per-exit val accuracy "
                  + " ".join(f"{a:.4f}" for a in result.val_exit_accuracy) + f"  ({result.seconds:.0f} s)")
    console.print(f"checkpoint: {result.checkpoint}")


def _exits(exits: str):
    """A placement name, or comma-separated block indices."""
    text = exits.strip()
    if not text or not text[0].isdigit():
        return text or "stages"
    try:
        return [int(i) for i in text.split(",")]
    except ValueError:
        raise ConfigError("bad --exits", got=exits, expected="stages | full | blocks | eenet:<dist>:<n> | e.g. 2,5,8",
                          hint="block indices are listed by `edgeexit backbones`") from None


def _trained(run_dir: Path) -> Path:
    """The checkpoint later stages use: RUN/pruned.pt when `edgeexit prune` wrote one, else RUN/checkpoint.pt."""
    pruned = run_dir / "pruned.pt"
    chosen = pruned if pruned.is_file() else run_dir / "checkpoint.pt"
    console.print(f"[dim]using {chosen}[/]")
    return chosen


@app.command()
def prune(
    run_dir: Path = RUN_DIR,
    mode: Optional[str] = typer.Option(None, help="AEP weight mode desc | asc | mix | unif (default: the training mode)"),
    limit: Optional[int] = typer.Option(None, help="use the first N validation samples"),
    show: int = typer.Option(10, help="how many subsets to list"),
    budget: Optional[str] = typer.Option(None, help="keep the subset with the best early-exit accuracy under this "
                                                    "MACs budget (0.5, 20e6macs) instead of AEP's best ensemble"),
):
    """Prune to the best exit subset on validation (AEP's ensemble rule, or under a budget); writes RUN/pruned.pt(.json)."""
    from edgeexit.pipeline import prune_stage

    try:
        res = prune_stage(run_dir / "checkpoint.pt", run_dir / "pruned.pt", mode=mode, limit=limit,
                          budget=_budget(budget) if budget else None)
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
    threshold: float = typer.Option(0.5, help="T of the fixed policy (EENet confidence)"),
    limit: Optional[int] = typer.Option(None, help="calibrate on the first N samples of the recipe's split"),
):
    """Choose exit thresholds for a budget; writes RUN/calibration.json and the accuracy/cost curves (JSON, PNG)."""
    from edgeexit import jsonio
    from edgeexit.pipeline import calibrate_stage

    try:
        b = _budget(budget)
        profile = None
        if b.kind == "ms":
            if not (run_dir / "profile.json").is_file():
                raise BudgetError("a millisecond budget needs the per-exit latency table of the target",
                                  got=f"no {run_dir / 'profile.json'}", expected="RUN/profile.json",
                                  hint="run `edgeexit export` then `edgeexit profile` first")
            profile = jsonio.read_json(run_dir / "profile.json")
        checkpoint = _trained(run_dir)
        cal = calibrate_stage(checkpoint, run_dir / "calibration.json", budget=b, policy=policy, score=score,
                              recipe=recipe, limit=limit, threshold=threshold, profile=profile)
    except EdgeExitError as err:
        _fail(err)
    t = Table(title=f"calibration ({cal.policy}, {cal.score_kind}, {cal.n_samples} samples)")
    for col in ("exit", "threshold", "fraction exiting", "accuracy alone", f"cost ({cal.cost_unit})"):
        t.add_column(col, justify="right")
    for k, (th, fr, acc, c) in enumerate(zip(cal.thresholds, cal.exit_fractions, cal.exit_accuracy, cal.costs)):
        t.add_row(str(k), f"{th:.4f}", f"{fr:.3f}", f"{acc:.4f}", f"{c:,.3f}" if cal.cost_unit == "ms" else f"{c:,.0f}")
    console.print(t)
    for w in cal.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    console.print(f"expected accuracy {cal.accuracy:.4f} at {_cost_summary(cal, checkpoint)} "
                  f"-> {run_dir / 'calibration.json'}, {run_dir / 'curves.png'}")


def _cost_summary(cal, checkpoint: Path) -> str:
    """Mean cost against the original model (a pruned network's last exit is not the yardstick)."""
    if cal.cost_unit == "ms":
        return f"{cal.mean_cost:.3f} ms per image ({cal.cost_fraction:.3f}x the last exit)"
    from edgeexit.pipeline import reference_macs

    return f"{cal.mean_cost / reference_macs(checkpoint):.3f}x the original model's MACs"


@app.command()
def profile(
    run_dir: Path = RUN_DIR,
    batch_size: int = typer.Option(1),
    rounds: int = typer.Option(60),
):
    """Per-exit latency of RUN/bundle on this machine's onnxruntime; writes RUN/profile.json and adds it to the bundle."""
    from edgeexit import jsonio
    from edgeexit.bundle import add_files, load_bundle
    from edgeexit.profile import profile_bundle

    try:
        bundle = load_bundle(run_dir / "bundle")
        prof = profile_bundle(bundle, batch_size=batch_size, rounds=rounds)
        jsonio.write_json(run_dir / "profile.json", prof)
        add_files(bundle, {"profile.json": jsonio.dumps(prof)})
    except EdgeExitError as err:
        _fail(err)
    console.print(profile_table(prof))


def profile_table(prof: dict) -> Table:
    t = Table(title=f"per-exit latency, {prof['backend']}, batch {prof['batch_size']} (p50 of {prof['rounds']} rounds)")
    for col in ("exit", "after", "p50 ms", "p90 ms", "time / full", "MACs / full"):
        t.add_column(col, justify="right")
    for e in prof["exits"]:
        t.add_row(str(e["index"]), e["name"], f"{e['p50_ms']:.3f}", f"{e['p90_ms']:.3f}", f"{e['time_fraction']:.3f}",
                  f"{e['macs_fraction']:.3f}")
    t.add_row("full", "unsplit model", f"{prof['full']['p50_ms']:.3f}", f"{prof['full']['p90_ms']:.3f}", "1.000", "1.000")
    return t


@app.command()
def export(
    run_dir: Path = RUN_DIR,
    target: str = typer.Option("cpu", help="see `edgeexit targets`"),
    out: Optional[Path] = typer.Option(None, help="bundle directory (default RUN_DIR/bundle)"),
):
    """Split into segments, export to ONNX (checked against torch), write the verified bundle."""
    from edgeexit.pipeline import export_stage

    try:
        bundle = export_stage(_trained(run_dir), run_dir / "calibration.json", out or run_dir / "bundle", target=target)
    except EdgeExitError as err:
        _fail(err)
    console.print(f"bundle: {bundle.root} ({len(bundle.exits)} segments, target {bundle.manifest['target']})")


@app.command("eval")
def eval_(
    bundle: Path = typer.Argument(..., help="a bundle directory"),
    split: str = typer.Option("test"),
    batch_size: int = typer.Option(64),
    limit: Optional[int] = typer.Option(None),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the figures as JSON"),
):
    """Accuracy, exit histogram, MACs and wall time of the bundle against the unsplit model (same backend)."""
    from edgeexit import jsonio
    from edgeexit.pipeline import evaluate_bundle
    from edgeexit.report import summary_table

    try:
        result = evaluate_bundle(bundle, split=split, batch_size=batch_size, limit=limit)
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
    image_size: int = typer.Option(32),
    method: str = METHOD,
    weight_mode: str = typer.Option("unif"),
    lam: Optional[float] = LAM,
    gater_features: str = GATER_FEATURES,
    gater_period: int = GATER_PERIOD,
    device: str = DEVICE,
    weights: Optional[str] = WEIGHTS,
    epochs: int = typer.Option(3, help="short by default so the whole job fits ~10 min on 2 cores"),
    lr: float = typer.Option(1e-3),
    schedule: str = typer.Option("cosine", help="learning rate: cosine (annealed to 0, good for short runs) | constant"),
    batch_size: int = typer.Option(64),
    budget: str = typer.Option("0.6"),
    policy: Optional[str] = typer.Option(None, help="default: search for aep, fixed (h >= 0.5) for eenet, gater "
                                                    "(P_k >= 0.5) for budget"),
    score: Optional[str] = typer.Option(None, help="default: max_softmax for aep, confidence for eenet, gater for budget"),
    seed: int = typer.Option(0),
    max_steps: Optional[int] = typer.Option(None),
    limit_train: Optional[int] = typer.Option(None), limit_val: Optional[int] = typer.Option(None),
    limit_test: Optional[int] = typer.Option(None),
    eval_batch_size: int = typer.Option(64),
    prune: bool = typer.Option(True, help="AEP pruning to the best exit subset (aep method only)"),
):
    """train -> prune -> calibrate -> export -> profile -> measure: a bundle with its report, in one go."""
    from edgeexit import jsonio
    from edgeexit.bundle import add_files
    from edgeexit.calibrate import Budget
    from edgeexit.pipeline import (
        DataConfig,
        calibrate_stage,
        evaluate_bundle,
        export_stage,
        exportable_target,
        prune_stage,
        train_stage,
    )
    from edgeexit.profile import profile_bundle
    from edgeexit.report import markdown_report, summary_table
    from edgeexit.targets import check_target
    from edgeexit.train.distributed import launched_by_torchrun

    t0 = time.time()
    try:
        status = check_target(exportable_target(target))
        if not status.ok:
            console.print(f"[yellow]target {target} cannot run here ({escape(status.reason)}); building its bundle and "
                          "measuring on onnxruntime CPU emulation[/]")
        if launched_by_torchrun():
            raise ConfigError("build does not run under torchrun", got="RANK/WORLD_SIZE set",
                              expected="one process", hint="train with torchrun (-m edgeexit.train.distributed), then "
                              "run `edgeexit calibrate` and `edgeexit export` once")
        data = DataConfig(dataset, image_size, seed, None, limit_train, limit_val, limit_test)
        model = _model_config(backbone, exits, head, image_size, weights, method, gater_features)
        cfg = _train_options(method, weight_mode, epochs, batch_size, lr, 12, seed, max_steps, lam=lam,
                             gater_period=gater_period, device=device, schedule=schedule)
        policy = policy or {"eenet": "fixed", "budget": "gater"}.get(method, "search")
        score = score or {"eenet": "confidence", "budget": "gater"}.get(method, "max_softmax")
        console.rule(f"[bold]1/6 train ({method})")
        result = train_stage(run_dir, data, model, cfg)
        console.print("per-exit val accuracy " + " ".join(f"{a:.4f}" for a in result.val_exit_accuracy))
        trained = result.checkpoint
        console.rule("[bold]2/6 prune")
        b = _budget(budget)
        if prune and method == "aep" and b.kind != "ms":
            pr = prune_stage(result.checkpoint, run_dir / "pruned.pt", budget=b if policy == "search" else None,
                             score=score)
            console.print(prune_table(pr, 5))
            console.print(prune_summary(pr))
            trained = run_dir / "pruned.pt"
        else:
            (run_dir / "pruned.pt").unlink(missing_ok=True)
            console.print("skipped (--no-prune, a method other than aep, or a millisecond budget)")
        console.rule("[bold]3/6 calibrate")
        prof = None
        if b.kind == "ms":  # a latency budget needs the measured table: export once, profile, then calibrate for real
            calibrate_stage(trained, run_dir / "calibration.json", budget=Budget("macs_fraction", 1.0), policy=policy,
                            score=score, curves=False)
            prof = profile_bundle(export_stage(trained, run_dir / "calibration.json", run_dir / "bundle", target=target))
        cal = calibrate_stage(trained, run_dir / "calibration.json", budget=b, policy=policy, score=score, profile=prof)
        console.print(f"thresholds {[round(t, 4) for t in cal.thresholds]}: expected accuracy {cal.accuracy:.4f} "
                      f"at {_cost_summary(cal, trained)}")
        console.rule("[bold]4/6 export")
        bundle = export_stage(trained, run_dir / "calibration.json", run_dir / "bundle", target=target)
        console.rule("[bold]5/6 profile")
        prof = profile_bundle(bundle)
        jsonio.write_json(run_dir / "profile.json", prof)
        console.print(profile_table(prof))
        console.rule("[bold]6/6 measure")
        ev = evaluate_bundle(bundle.root, batch_size=eval_batch_size)
        extra = {"report.md": markdown_report(ev, cal.to_dict(), prof), "eval.json": jsonio.dumps(ev),
                 "profile.json": jsonio.dumps(prof)}
        for name in ("curves.png", "curves.json"):
            if (run_dir / name).is_file():
                extra[name] = (run_dir / name).read_bytes()
        add_files(bundle, extra)
    except EdgeExitError as err:
        _fail(err)
    console.print(summary_table(ev, title=f"{backbone} on {dataset}, target {target}"))
    console.print(f"bundle: {bundle.root}  (report.md, eval.json inside)  total {time.time() - t0:.0f} s")


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
