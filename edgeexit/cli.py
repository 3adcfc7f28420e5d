"""`edgeexit` command line: options in, tables out. build does everything (edgeexit/recipe.py); train, prune,
calibrate, export, profile, eval and report run one stage each (edgeexit/pipeline.py, evaluate.py, profile.py,
report.py). Options shared by several commands: edgeexit/cli_options.py; what they mean as configs: options.py."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from edgeexit import chatter
from edgeexit import cli_options as flags
from edgeexit import options as opt
from edgeexit.cli_guard import GuardedGroup
from edgeexit.cli_options import options
from edgeexit.errors import EdgeExitError
from edgeexit.glue.command import glue as _glue

# GuardedGroup: the one top-level handler, no command ends in a traceback for a full disk or a bad path
app = typer.Typer(cls=GuardedGroup, add_completion=False, no_args_is_help=True,
                  help="Turn an image classifier into an early-exit network and ship it to edge devices.")
console = Console()
app.command("glue", rich_help_panel="Device glue")(_glue)  # edgeexit/glue/command.py: keeps cli.py short


def _print_version(value: bool) -> None:
    if value:
        from edgeexit.runtime.registry import version_text

        typer.echo(version_text())
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                       help="print edgeexit's version and its runtimes' versions, then exit")) -> None:
    """Turn an image classifier into an early-exit network and ship it to edge devices."""


def _fail(err: EdgeExitError) -> None:
    console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)  # no line breaks inside paths and commands
    raise typer.Exit(2)


@app.command()
@options(flags.TRAIN, flags.TRAIN_SHARED)
def train(run_dir, amp, freeze_bn, sync_bn, patience, resume, adopt, shared):
    """Train the exit network (AEP loss by default) and write RUN_DIR/checkpoint.pt.

    Data-parallel on several GPUs or nodes: `torchrun --nproc_per_node N -m edgeexit train ARGS`
    (ARGS as for this command; see edgeexit/train/distributed.py).
    """
    from edgeexit.pipeline import train_stage
    from edgeexit.rundir import RunDir

    try:
        opt.check_resume(resume, adopt)
        o = opt.train_options(**shared, patience=patience, amp=amp, freeze_bn=freeze_bn, sync_bn=sync_bn)
        run = RunDir(run_dir)
        # under torchrun every rank runs this command; rank 0 writes the run directory, so rank 0 holds it
        with run.lock("train") if os.environ.get("RANK", "0") == "0" else contextlib.nullcontext():
            result = train_stage(run, o.data, o.model, o.train, resume=resume, adopt=adopt)
    except EdgeExitError as err:
        _fail(err)
    if not result.is_main:
        return
    console.print(f"best epoch {result.best_epoch + 1}: val loss {result.best_val_loss:.4f}, per-exit val accuracy "
                  + " ".join(f"{a:.4f}" for a in result.val_exit_accuracy) + f"  ({result.seconds:.0f} s)")
    console.print(f"checkpoint: {result.checkpoint}")


def _trained(run) -> Path:
    """The checkpoint later stages use: RUN/pruned.pt when `edgeexit prune` cut one from RUN/checkpoint.pt, else
    RUN/checkpoint.pt (RunDir.trained refuses a stale pruned.pt)."""
    chosen = run.trained()
    chatter.say(f"[dim]using {chosen}[/]")
    return chosen


@app.command()
@options(flags.PRUNE)
def prune(run_dir, mode, limit, show, budget, model, model_kwargs):
    """Prune to the best exit subset on validation (AEP's ensemble rule, or under a budget); writes RUN/pruned.pt(.json)."""
    from edgeexit.pipeline import prune_stage
    from edgeexit.rundir import RunDir
    from edgeexit.tables import prune_summary, prune_table

    try:
        run = RunDir(run_dir)
        with run.lock("prune"):
            res = prune_stage(run, mode=mode, limit=limit, budget=opt.budget(budget) if budget else None,
                              model=opt.passed_model(model, model_kwargs))
    except EdgeExitError as err:
        _fail(err)
    console.print(prune_table(res, show))
    console.print(f"{prune_summary(res)}  -> {run_dir / 'pruned.pt'}")


@app.command()
@options(flags.CALIBRATE)
def calibrate(run_dir, budget, policy, score, recipe, threshold, quota, limit, temperature, model, model_kwargs):
    """Choose exit thresholds for a budget; writes RUN/calibration.json and the accuracy/cost curves (JSON, PNG)."""
    from edgeexit.pipeline import calibrate_stage, read_profile
    from edgeexit.rundir import RunDir
    from edgeexit.tables import calibration_table, cost_summary, temperature_table

    try:
        run = RunDir(run_dir)
        with run.lock("calibrate"):
            b = opt.budget(budget)
            checkpoint = _trained(run)
            profile = read_profile(run, checkpoint) if b.kind == "ms" else None
            cal = calibrate_stage(run, checkpoint, budget=b, policy=policy, score=score, recipe=recipe, limit=limit,
                                  threshold=threshold, profile=profile, temperature=temperature, quota=quota,
                                  model=opt.passed_model(model, model_kwargs))
    except EdgeExitError as err:
        _fail(err)
    console.print(calibration_table(cal))
    if cal.calibration_error:
        console.print(temperature_table(cal))
    for w in cal.warnings:
        console.print(f"[yellow]warning:[/] {escape(w)}")
    console.print(f"expected accuracy {cal.accuracy:.4f} at {cost_summary(cal)} "
                  f"-> {run_dir / 'calibration.json'}, {run_dir / 'curves.png'}")


@app.command()
@options(flags.PROFILE)
def profile(run_dir, backend, device, batches, rounds, calls, runner, runner_binary, etdump):
    """Per-exit latency of RUN/bundle on a device and backend (default: this machine, the bundle's own backend),
    the unsplit model timed beside it, the run's own noise; writes RUN/profile.json and attaches it to the bundle."""
    from edgeexit import jsonio
    from edgeexit.bundle import REPORTS, add_files, load_bundle
    from edgeexit.devices import parse_device
    from edgeexit.profile import profile_bundle
    from edgeexit.rundir import RunDir
    from edgeexit.tables import etdump_table, noise_note, profile_table

    try:
        run = RunDir(run_dir)
        dev = parse_device(device, runner)
        sizes = opt.batch_list(batches)  # checked before anything is opened
        with run.lock("profile"):
            bundle = load_bundle(run.bundle)
            chatter.say(f"profiling {bundle.root.name} on {escape(dev.describe())} ({rounds} rounds)...")
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
    console.print(noise_note(prof))
    if "etdump" in prof:
        console.print(etdump_table(prof["etdump"]))


@app.command()
@options(flags.EXPORT)
def export(run_dir, target, precision, out, model, model_kwargs, slim, slim_vectors):
    """Split into one exported program per segment, lower them for the target (each checked against its program),
    write the verified bundle."""
    from edgeexit.pipeline import export_stage
    from edgeexit.rundir import RunDir
    from edgeexit.tables import export_lines

    try:
        run = RunDir(run_dir)
        with run.lock("export"):
            bundle = export_stage(run, _trained(run), out, target=target, precision=precision, slim=slim,
                                  slim_vectors=slim_vectors, model=opt.passed_model(model, model_kwargs))
    except EdgeExitError as err:
        _fail(err)
    for line in export_lines(bundle, out or run.bundle):
        console.print(line, soft_wrap=True)


@app.command()
@options(flags.ENGINES)
def engines(bundle, out, trtexec, workspace_mb, compute_capability, flavour, profile_after):
    """Verify a bundle whose target runs engines, build them here from its ONNX into a new version of the bundle, then
    profile them (run it on the device or GPU host that will run them; `edgeexit targets` says which targets)."""
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
@options(flags.EVAL)
def eval_(bundle, backend, split, batch_size, limit, json_out):
    """Accuracy, exit histogram, MACs and wall time of the bundle against the unsplit model (same backend)."""
    from edgeexit import jsonio
    from edgeexit.evaluate import evaluate_bundle
    from edgeexit.report import summary_table

    try:
        result = evaluate_bundle(bundle, backend=backend, split=split, batch_size=batch_size, limit=limit)
    except EdgeExitError as err:
        _fail(err)
    console.print(summary_table(result))
    if json_out:
        jsonio.write_json(json_out, result)


@app.command()
@options(flags.PREDICT)
def predict(bundle, images, backend, json_out):
    """Classify image files (or every image in a folder) with a bundle: class, the exit that answered, its score and
    the time per image. The images are preprocessed as in training (edgeexit.images.load_images)."""
    import json

    from edgeexit.predict import predict_files

    try:
        res = predict_files(bundle, images, backend)
    except EdgeExitError as err:
        _fail(err)
    if json_out:
        typer.echo(json.dumps(res, indent=2))
        return
    from edgeexit.tables import predict_table

    console.print(predict_table(res, bundle))


@app.command()
@options(flags.BUILD, flags.TRAIN_SHARED)
def build(target, run_dir, temperature, budget, max_drop, latency_first, batch, policy, score, eval_batch_size,
          precision, prune, profile_device, slim, slim_vectors, shared):
    """train -> prune -> calibrate -> export -> profile -> measure: a bundle with its report, in one go."""
    from edgeexit.recipe import build as build_recipe
    from edgeexit.rundir import RunDir
    from edgeexit.tables import build_lines

    try:
        # Every option is checked before the first epoch: a typo must not cost a training run.
        o = opt.train_options(**shared)
        choices = opt.build_choices(target, precision, budget, policy, score, o.train.method, eval_batch_size,
                                    max_drop=max_drop, latency_first=latency_first, batch=batch, prune=prune)
        run = RunDir(run_dir)
        with run.lock("build"):
            res = build_recipe(run, o, choices, temperature=temperature, prune=prune, eval_batch_size=eval_batch_size,
                               profile_device=profile_device, say=chatter.say, rule=chatter.rule,
                               slim=slim, slim_vectors=slim_vectors)
    except EdgeExitError as err:
        _fail(err)
    for line in build_lines(res, choices, run, run_dir, profile_device, title=f"{shared['backbone']} on "
                            f"{shared['dataset']}, target {target}"):
        console.print(line, soft_wrap=isinstance(line, str))  # no line breaks inside paths and commands


@app.command()
@options(flags.REPORT)
def report(run_dir):
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
@options(flags.COMPARE)
def compare(bundle, backends, samples, tolerance, json_out):
    """Every backend on the same inputs: max |Δlogits| per exit, exit-decision agreement; exit code 1 on failure."""
    from edgeexit import jsonio
    from edgeexit.bundle import load_bundle
    from edgeexit.compare import compare_backends
    from edgeexit.evaluate import test_split
    from edgeexit.tables import compare_lines

    try:
        opt.check_tolerance(tolerance)
        b = load_bundle(bundle)
        images = test_split(b, "test", samples)[0] if samples > 0 else None
        names = [n.strip() for n in backends.split(",") if n.strip()] if backends else None
        res = compare_backends(b, names, images=images, tolerance=tolerance)
    except EdgeExitError as err:
        _fail(err)
    for line in compare_lines(res):
        console.print(line)
    if json_out:
        jsonio.write_json(json_out, res.to_dict())
    if not res.passed:
        raise typer.Exit(1)


@app.command()
def targets():
    """Every target in targets/*.toml: what it needs and whether it works on this machine."""
    from edgeexit.tables import targets_table
    from edgeexit.targets import targets_table as target_rows

    try:
        rows = target_rows()
    except EdgeExitError as err:
        _fail(err)
    console.print(targets_table(rows))


@app.command()
def backbones():
    """The backbones edgeexit has adapters for, with their exits."""
    from edgeexit.tables import backbones_table

    console.print(backbones_table())


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
