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

from edgeexit.errors import EdgeExitError

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


def _train_options(method, weight_mode, epochs, batch_size, lr, patience, seed, max_steps):
    from edgeexit.train.trainer import TrainConfig

    return TrainConfig(method=method, weight_mode=weight_mode, epochs=epochs, batch_size=batch_size, lr=lr,
                       patience=patience, seed=seed, max_steps_per_epoch=max_steps)


@app.command()
def train(
    run_dir: Path = RUN_DIR,
    dataset: str = DATASET,
    backbone: str = typer.Option("resnet18", help="see `edgeexit backbones`"),
    exits: str = typer.Option("stages", help="stages | full | blocks | comma-separated block indices"),
    head: str = typer.Option("aep", help="aep | plain | pool | bnpool"),
    image_size: int = typer.Option(32),
    method: str = typer.Option("aep"),
    weight_mode: str = typer.Option("unif", help="AEP weights: desc | asc | mix | unif"),
    epochs: int = typer.Option(100),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(1e-4),
    patience: int = typer.Option(12),
    seed: int = typer.Option(0),
    max_steps: Optional[int] = typer.Option(None, help="cap on steps per epoch (quick runs)"),
    limit_train: Optional[int] = typer.Option(None), limit_val: Optional[int] = typer.Option(None),
    limit_test: Optional[int] = typer.Option(None),
    weights: Optional[Path] = typer.Option(None, help="torchvision state_dict file to fine-tune from"),
    resume: bool = typer.Option(False, help="continue from run-dir/checkpoint.pt"),
):
    """Train the exit network (AEP loss by default) and write RUN_DIR/checkpoint.pt."""
    from edgeexit.models import ModelConfig
    from edgeexit.pipeline import DataConfig, train_stage

    try:
        data = DataConfig(dataset, image_size, seed, None, limit_train, limit_val, limit_test)
        model = ModelConfig(backbone=backbone, exits=_exits(exits), head=head, image_size=image_size,
                            weights=str(weights) if weights else None)
        cfg = _train_options(method, weight_mode, epochs, batch_size, lr, patience, seed, max_steps)
        result = train_stage(run_dir, data, model, cfg, resume=resume)
    except EdgeExitError as err:
        _fail(err)
    console.print(f"best epoch {result.best_epoch + 1}: val loss {result.best_val_loss:.4f}, per-exit val accuracy "
                  + " ".join(f"{a:.4f}" for a in result.val_exit_accuracy) + f"  ({result.seconds:.0f} s)")
    console.print(f"checkpoint: {result.checkpoint}")


def _exits(exits: str):
    return [int(i) for i in exits.split(",")] if exits[0].isdigit() else exits


@app.command()
def calibrate(
    run_dir: Path = RUN_DIR,
    budget: str = typer.Option("0.5", help="fraction of full MACs (0.5), '20e6macs', '5ms@jetson', or a preset name"),
    policy: str = typer.Option("search", help="search | fractions | fixed | gater"),
    score: str = typer.Option("max_softmax", help="max_softmax | margin | neg_entropy | confidence | gater"),
    limit: Optional[int] = typer.Option(None, help="calibrate on the first N validation samples"),
):
    """Choose exit thresholds on the validation split for a budget; writes RUN_DIR/calibration.json."""
    from edgeexit.pipeline import calibrate_stage

    try:
        cal = calibrate_stage(run_dir / "checkpoint.pt", run_dir / "calibration.json", budget=_budget(budget),
                              policy=policy, score=score, limit=limit)
    except EdgeExitError as err:
        _fail(err)
    t = Table(title=f"calibration ({cal.policy}, {cal.score_kind})")
    for col in ("exit", "threshold", "fraction exiting", "accuracy alone"):
        t.add_column(col, justify="right")
    for k, (th, fr, acc) in enumerate(zip(cal.thresholds, cal.exit_fractions, cal.exit_accuracy)):
        t.add_row(str(k), f"{th:.4f}", f"{fr:.3f}", f"{acc:.4f}")
    console.print(t)
    console.print(f"expected accuracy {cal.accuracy:.4f} at {cal.cost_fraction:.3f}x full MACs  -> {run_dir / 'calibration.json'}")


@app.command()
def export(
    run_dir: Path = RUN_DIR,
    target: str = typer.Option("cpu", help="see `edgeexit targets`"),
    out: Optional[Path] = typer.Option(None, help="bundle directory (default RUN_DIR/bundle)"),
):
    """Split into segments, export to ONNX (checked against torch), write the verified bundle."""
    from edgeexit.pipeline import export_stage

    try:
        bundle = export_stage(run_dir / "checkpoint.pt", run_dir / "calibration.json", out or run_dir / "bundle", target=target)
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
    image_size: int = typer.Option(32),
    weight_mode: str = typer.Option("unif"),
    epochs: int = typer.Option(3, help="short by default so the whole job fits ~10 min on 2 cores"),
    lr: float = typer.Option(1e-3),
    batch_size: int = typer.Option(64),
    budget: str = typer.Option("0.6"),
    policy: str = typer.Option("search"),
    seed: int = typer.Option(0),
    max_steps: Optional[int] = typer.Option(None),
    limit_train: Optional[int] = typer.Option(None), limit_val: Optional[int] = typer.Option(None),
    limit_test: Optional[int] = typer.Option(None),
    eval_batch_size: int = typer.Option(64),
):
    """train -> calibrate -> export -> measure -> bundle with report, in one go."""
    from edgeexit import jsonio
    from edgeexit.bundle import add_files
    from edgeexit.models import ModelConfig
    from edgeexit.pipeline import DataConfig, calibrate_stage, evaluate_bundle, export_stage, train_stage
    from edgeexit.report import markdown_report, summary_table
    from edgeexit.targets import check_target, load_target

    t0 = time.time()
    try:
        status = check_target(load_target(target))
        if not status.ok:
            console.print(f"[yellow]target {target} cannot run here ({escape(status.reason)}); building its bundle and "
                          "measuring on onnxruntime CPU emulation[/]")
        data = DataConfig(dataset, image_size, seed, None, limit_train, limit_val, limit_test)
        console.rule("[bold]1/4 train")
        result = train_stage(run_dir, data, ModelConfig(backbone=backbone, exits=_exits(exits), image_size=image_size),
                             _train_options("aep", weight_mode, epochs, batch_size, lr, 12, seed, max_steps))
        console.print("per-exit val accuracy " + " ".join(f"{a:.4f}" for a in result.val_exit_accuracy))
        console.rule("[bold]2/4 calibrate")
        cal = calibrate_stage(result.checkpoint, run_dir / "calibration.json", budget=_budget(budget), policy=policy)
        console.print(f"thresholds {[round(t, 4) for t in cal.thresholds]}: expected accuracy {cal.accuracy:.4f} "
                      f"at {cal.cost_fraction:.3f}x MACs")
        console.rule("[bold]3/4 export")
        bundle = export_stage(result.checkpoint, run_dir / "calibration.json", run_dir / "bundle", target=target)
        console.rule("[bold]4/4 measure")
        ev = evaluate_bundle(bundle.root, batch_size=eval_batch_size)
        add_files(bundle, {"report.md": markdown_report(ev, cal.to_dict()), "eval.json": jsonio.dumps(ev)})
    except EdgeExitError as err:
        _fail(err)
    console.print(summary_table(ev, title=f"{backbone} on {dataset}, target {target}"))
    console.print(f"bundle: {bundle.root}  (report.md, eval.json inside)  total {time.time() - t0:.0f} s")


@app.command()
def targets():
    """Every target in targets/*.toml: what it needs and whether it works on this machine."""
    from edgeexit.targets import targets_table

    rows = targets_table()
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
    from edgeexit.models import ModelConfig, backbone, exit_blocks, list_backbones

    t = Table(title="backbones")
    for col in ("name", "blocks", "exits after (stages)", "full"):
        t.add_column(col)
    for name in list_backbones():
        bb = backbone(name, num_classes=10, in_channels=3)
        t.add_row(name, str(len(bb.blocks)), ", ".join(bb.block_names[i] for i in bb.stages),
                  ", ".join(bb.block_names[i] for i in exit_blocks(bb, "full")))
    console.print(t)


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
