"""The build recipe: train -> prune -> calibrate -> export (+ evaluate, profile, report) in one go, as `edgeexit
build` runs it. Which stages run and with what:

- latency first (the default; --max-drop, --latency-first): the unpruned network is exported once and profiled on
  the target, a cost model fitted (RUN/costmodel.json), and one search over exit subsets x thresholds chooses the
  deployment (edgeexit/deploy/stage.py) in place of prune and calibrate; the export below ships it. Given no budget
  and no objective, the build asks for the fastest deployment within DEFAULT_MAX_DROP points; where the search
  cannot decide (edgeexit.options: other methods, int8 or fp16, --no-prune, a target whose runtime cannot be timed
  here) it builds for the MACs budget DEFAULT_BUDGET and says why in one line. With --freeze-backbone only subsets
  that keep the final exit (the user's own classifier) are searched.
- prune: AEP's pruning for the aep method under a MACs budget; skipped for other methods and millisecond budgets,
  and undone when the kept subset drops the user's own classifier that --freeze-backbone keeps.
- a millisecond budget (MACs-first route) takes two passes: calibrate for the whole model, export it into a
  scratch directory, profile it on this host, then calibrate for the budget from that table (the bundle is
  written once, by the export below).
- the bundle is written once: its evaluation, profile and report are measured on the finished version before it
  is swapped in and attached to that same write (write_bundle's `attach`); nothing loads it again.

The target is parsed once (edgeexit.options.build_choices), each stage loads the checkpoint it uses once (the
pruned one is chosen by pruned.json, without loading it), and each bundle file is hashed once, where it is written.
What people see goes through `say` (a line or a rich table) and `rule` (a stage heading): this module prints
nothing itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgeexit import jsonio
from edgeexit.bundle import REPORTS, Bundle
from edgeexit.options import BuildChoices, TrainOptions
from edgeexit.rundir import RunDir


@dataclass
class BuildResult:
    bundle: Bundle
    evaluation: dict
    profile: dict
    report: dict
    backend: str  # what the evaluation and profile ran on
    seconds: float


def _quiet(*_: Any) -> None:
    return None


def measure_backend(bundle: Bundle, say: Callable[[Any], None] = _quiet) -> str:
    """The backend a build measures on: the bundle's own when it can run here; else the CPU emulation (from the
    backend registry), said out loud."""
    from rich.markup import escape

    from edgeexit.runtime.registry import measure_backend as choose

    name, why = choose(bundle.manifest)
    if why is not None:
        say(f"[yellow]target {escape(bundle.manifest.target)} cannot run here ({escape(why)}); "
            f"measuring on {name} (CPU emulation)[/]")
    return name


def build(run: RunDir, opts: TrainOptions, choices: BuildChoices, *, temperature: bool = True, prune: bool = True,
          eval_batch_size: int = 64, profile_device: str = "local", say: Callable[[Any], None] = _quiet,
          rule: Callable[[str], None] = _quiet, slim: bool = True, slim_vectors: bool = False) -> BuildResult:
    """The whole build into `run` (its lock held by the caller). Every option was checked before this is called."""
    from edgeexit.evaluate import evaluate_bundle
    from edgeexit.pipeline import export_stage, train_stage
    from edgeexit.profile import profile_bundle
    from edgeexit.report import keep_in_run, report_files
    from edgeexit.tables import noise_note, profile_table

    t0 = time.time()
    method, passed = opts.train.method, opts.passed
    choices = settle_default(choices, profile_device, say)
    rule(f"[bold]1/6 train ({method})")
    result = train_stage(run, opts.data, opts.model, opts.train)
    say("per-exit val accuracy " + " ".join(f"{a:.4f}" for a in result.val_exit_accuracy))
    export = dict(target=choices.target, precision=choices.precision, model=passed)
    backend, profile_batches = None, None
    if choices.objective is not None:  # latency first: decide on the device (edgeexit/deploy/stage.py)
        from edgeexit.deploy.stage import decide

        rule("[bold]2/6 profile the unpruned network, 3/6 search deployments")
        decision = decide(run, choices, temperature=temperature, profile_device=profile_device, model=passed,
                          keep_final=opts.train.freeze_backbone, say=say)
        backend, profile_batches = decision.backend, decision.batches
    else:
        backend = _prune_and_calibrate(run, opts, choices, temperature=temperature, prune=prune, say=say, rule=rule)
    trained = run.trained()
    rule("[bold]4/6 export")
    measured: dict = {}

    def attach(bundle: Bundle) -> dict[str, str | bytes]:
        """Profile, evaluate and report the finished bundle before it is swapped in: one write for all of it."""
        name = backend or measure_backend(bundle, say)
        rule(f"[bold]5/6 profile ({name}, {profile_device})")
        prof = profile_bundle(bundle, backend=name, device=profile_device, batches=profile_batches)
        for size in prof["batches"] if profile_batches else [None]:
            say(profile_table(prof, size))
        say(noise_note(prof))
        rule(f"[bold]6/6 measure and report ({name})")
        ev = evaluate_bundle(bundle, backend=name, batch_size=eval_batch_size)
        ev["bundle"] = str(run.bundle)  # where it will be: this version directory is the one before the attachments
        rep, files = report_files(run, bundle, ev, prof)
        measured.update(backend=name, prof=prof, ev=ev, rep=rep, files=files)
        return {f"{REPORTS}{k}": v for k, v in files.items()}

    # the deployable bundle (RUN/bundle-slim) beside the development one (edgeexit.bundle.slim)
    bundle = export_stage(run, trained, attach=attach, slim=slim, slim_vectors=slim_vectors, **export)
    # the run directory keeps what the separate commands read and write (eval.json, profile.json, the report), the
    # same bytes the bundle's report/ holds
    jsonio.write_json(run.profile, measured["prof"])
    jsonio.write_json(run.eval_json, measured["ev"])
    keep_in_run(run, measured["files"])
    return BuildResult(bundle, measured["ev"], measured["prof"], measured["rep"], measured["backend"],
                       time.time() - t0)


def settle_default(choices: BuildChoices, profile_device: str, say: Callable[[Any], None] = _quiet) -> BuildChoices:
    """The default objective stays only where the target can be timed (`device_blocker`); what the build decides on
    is said in one line."""
    from rich.markup import escape

    from edgeexit.options import device_blocker, on_macs

    if choices.default and (why := device_blocker(choices, profile_device)) is not None:
        choices = on_macs(choices, why)
    if choices.note is not None:
        say(f"[yellow]{escape(choices.note)}[/]")
    elif choices.default:
        say(f"deciding on the device: the {escape(choices.objective.describe())} (the default; --max-drop PT to "
            "change it, --budget for a MACs budget)")
    return choices


def _prune_and_calibrate(run: RunDir, opts: TrainOptions, choices: BuildChoices, *, temperature: bool, prune: bool,
                         say: Callable[[Any], None], rule: Callable[[str], None]) -> str | None:
    """The MACs-first route (the default): AEP pruning under a MACs budget, then calibration for the budget (a
    millisecond budget: export the whole model once, profile it here, calibrate from that table). Returns the
    backend that millisecond pass measured on (None without one)."""
    from edgeexit.calibrate import Budget
    from edgeexit.pipeline import calibrate_stage, export_stage, prune_stage
    from edgeexit.profile import profile_bundle
    from edgeexit.tables import cost_summary, prune_summary, temperature_table

    method, b, passed = opts.train.method, choices.budget, opts.passed
    rule("[bold]2/6 prune")
    if prune and method == "aep" and b.kind != "ms":
        from edgeexit.tables import prune_table

        pr = prune_stage(run, budget=b if choices.policy == "search" else None, score=choices.score, model=passed)
        say(prune_table(pr, 5))
        say(prune_summary(pr))
        if opts.train.freeze_backbone and pr.kept_exits[-1] != len(pr.full["exits"]) - 1:
            # the pruned network would end before the user's classifier, whose answers --freeze-backbone keeps
            run.pruned.unlink(missing_ok=True)
            run.pruned_json.unlink(missing_ok=True)
            say("[yellow]not pruned: that subset drops your model's own classifier, the final exit "
                "--freeze-backbone keeps[/]")
    else:
        run.pruned.unlink(missing_ok=True)
        say("skipped (--no-prune, a method other than aep, or a millisecond budget)")
    trained = run.trained()
    export = dict(target=choices.target, precision=choices.precision, model=passed)
    rule("[bold]3/6 calibrate")
    backend, prof = None, None
    if b.kind == "ms":  # a latency budget needs the measured table: export once, profile, then calibrate
        import shutil

        calibrate_stage(run, trained, budget=Budget("macs_fraction", 1.0), policy=choices.policy, score=choices.score,
                        curves=False, temperature=temperature, model=passed)
        # into a scratch directory: RUN/bundle is written once, by the build's own export (a dead build's scratch
        # directory is cleaned by the run's lock)
        scratch = jsonio.make_temp_dir(run.root, "ms-profile")
        try:
            first = export_stage(run, trained, out=scratch / "bundle", **export)
            backend = measure_backend(first, say)
            prof = profile_bundle(first, backend=backend)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        jsonio.write_json(run.profile, prof)
    cal = calibrate_stage(run, trained, budget=b, policy=choices.policy, score=choices.score, profile=prof,
                          temperature=temperature, model=passed)
    say(f"thresholds {[round(t, 4) for t in cal.thresholds]}: expected accuracy {cal.accuracy:.4f} "
        f"at {cost_summary(cal)}")
    if cal.calibration_error:
        say(temperature_table(cal))
    return backend


def on_device_hint(choices: BuildChoices, run_dir: Path, backend: str) -> str | None:
    """The command that profiles the bundle on its device, when its target profiles there."""
    target = choices.target
    if target.profile != "device":
        return None
    where = "adb://SERIAL --runner-binary edgeexit_runner" if target.name in ("android", "ios") else "ssh://user@host"
    return (f"[bold]on the {target.name} itself:[/] edgeexit profile --run-dir {run_dir} --device {where} && "
            f"edgeexit report --run-dir {run_dir}  (this build measured {backend} on this machine)")
