"""The latency-first build's middle (issue 18): decide on the device, then hand the normal export what was decided.

    validation outputs of the unpruned network (one forward pass, the calibration set of `calibrate`), temperatures
    -> export the unpruned network once for the target (a scratch run directory, removed afterwards) and profile it
       at batch 1, the operating batch and the target's largest -> RUN/costmodel.json
    -> search every exit subset x thresholds at the operating batch for the objective, each costed as the bundle
       will run it (`LatencyCost`: a single exit as one plain call, as the runtime runs a one-segment bundle; more
       exits through the exit loop); a refusal changes nothing but costmodel.json (a drop nothing meets is refused
       before the export)
    -> RUN/pruned.pt (+ .json) keeping the chosen exits (none when it keeps them all), RUN/search.json (what the
       search considered, for the report's front) and RUN/calibration.json with
       the chosen thresholds; what the shipped deployment was predicted to take rides in its policy_params, so the
       report can put it next to what was measured.

What people see goes through `say`; this module prints nothing itself.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgeexit.deploy.costmodel import CostModel, fit_cost_model
from edgeexit.deploy.search import LatencyCost, MacCost, SearchResult, search_deployments, validation_arrays


def _quiet(*_: Any) -> None:
    return None


@dataclass
class Decision:
    model: CostModel
    search: SearchResult
    backend: str  # what the unpruned network was profiled on (the shipped one is measured on the same)
    batches: list[int]  # the profiled batch sizes (the shipped deployment is profiled at the same)
    exit_names: list[str]  # of the unpruned network


def tested_thresholds(score: str, num_exits: int) -> list[float]:
    """The thresholds the unpruned network is profiled with: finite (the top of the score's range) at every exit but
    the last. The profile times forced runs only, which let nobody leave whatever the thresholds, but a finite
    threshold makes each run pay every earlier exit's test, as a sample that goes on pays it in the shipped loop (an
    infinite one skips the test: the cost model would miss it)."""
    from edgeexit.calibrate.calibration import SCORE_RANGES

    return [float(SCORE_RANGES[score][1])] * (num_exits - 1) + [math.inf]


def profile_batches(target, batch: int) -> list[int]:
    return sorted({1, int(batch), int(target.batch[1])})


def best_static(res: SearchResult):
    """The static truncation (or the unsplit model) the chosen deployment is measured against: the fastest meeting
    the accuracy floor (max_drop), else the most accurate within the cost cap; None when none qualifies."""
    obj, n = res.objective, res.n_samples
    statics = list(res.statics)
    if obj.max_drop is not None:
        ok = [d for d in statics if obj.within_drop(d, res.full, n)]
        return min(ok, key=lambda d: (d.cost, -d.accuracy), default=None)
    ok = [d for d in statics if obj.within_cap(d)]
    return max(ok, key=lambda d: (d.accuracy, -d.cost), default=None)


def decide(run, choices, *, temperature: bool = True, profile_device: str = "local", model=None,
           keep_final: bool = False, say: Callable[[Any], None] = _quiet) -> Decision:
    """Profile the unpruned network, fit and save the cost model, search, and write pruned.pt and calibration.json
    for what was chosen (see the module's doc). `run` is locked by the caller; `choices.objective` is set.
    `keep_final`: search only deployments that keep the final exit (--freeze-backbone: the user's own classifier,
    whose answers the frozen backbone was kept for, is never truncated away)."""
    from edgeexit.calibrate import LOGIT_KINDS, exit_scores, fit_temperatures, load_recipe
    from edgeexit.calibrate.temperature import scale
    from edgeexit.models.costs import count_costs
    from edgeexit.outputs import collect_outputs
    from edgeexit.pipeline import _trained, check_calibration_set
    from edgeexit.tables import costmodel_note, deployment_table
    from edgeexit.train.checkpoint import load_checkpoint

    objective, batch, score = choices.objective, choices.batch, choices.score
    ckpt = load_checkpoint(run.checkpoint)
    net, cfg, spec, data = _trained(ckpt, model)
    # the calibration set `calibrate` uses (its default recipe), one forward pass of the unpruned network
    rec = load_recipe("default")
    splits = data.load(spec.channels)
    dataset = {"val": splits.val, "train": splits.train, "test": splits.test}[rec.split]
    outs = collect_outputs(net, dataset).subset(rec.indices(len(dataset)))
    check_calibration_set(outs.labels, rec.split)
    temps, calibration_error = None, {}
    if temperature and score in LOGIT_KINDS:
        temps, calibration_error = fit_temperatures(outs.logits, outs.labels)
    scores, correct = validation_arrays(outs.logits, outs.labels, kind=score, temperatures=temps)
    costs = count_costs(net, spec.channels, spec.height)
    if objective.max_drop is not None:
        # a drop nothing meets is refused before minutes of export and profiling: accuracy does not depend on cost
        from edgeexit.deploy.search import make_objective

        search_deployments(scores, correct, MacCost.from_costs(costs), make_objective(max_drop=objective.max_drop,
                                                                                    confidence=objective.confidence),
                           keep_final=keep_final)
    cm, backend, batches = _profile_unpruned(run, choices, net.num_exits, outs, scores, temps, costs, profile_device,
                                             model, say)
    say(costmodel_note(cm))
    if keep_final:
        say("--freeze-backbone: only deployments that keep the final exit (your model's own classifier) are searched")
    res = search_deployments(scores, correct, LatencyCost(cm, batch), objective, keep_final=keep_final)
    say(deployment_table(res, net.exit_names, best_static(res), backend, cm.full_ms(batch)))
    _write_choice(run, ckpt, net, costs, res, cm, outs, exit_scores(outs.logits if temps is None else
                  scale(outs.logits, np.asarray(temps, dtype=np.float64)), score), temps, calibration_error, choices)
    return Decision(cm, res, backend, batches, list(net.exit_names))


def _profile_unpruned(run, choices, num_exits, outs, scores, temps, costs, profile_device, model, say):
    """Export the whole network for the target into a scratch run directory (its own forced-final calibration),
    profile it, fit the cost model and save it as RUN/costmodel.json; the scratch directory is removed."""
    from edgeexit import jsonio
    from edgeexit.calibrate.calibration import make_calibration, write_calibration_file
    from edgeexit.pipeline import export_stage
    from edgeexit.profile import profile_bundle
    from edgeexit.recipe import measure_backend
    from edgeexit.rundir import RunDir

    preds = outs.logits.argmax(-1)
    cal = make_calibration("search", choices.score, tested_thresholds(choices.score, num_exits), scores.T, preds,
                           outs.labels,
                           np.asarray(costs.cumulative_macs, dtype=np.float64), "macs", None, None,
                           reference_cost=float(costs.full_macs), temperatures=temps)  # unpruned: the unsplit MACs
    cal.provenance = {"checkpoint": run.checkpoint.name, "checkpoint_sha256": run.sha256(run.checkpoint)}
    scratch = jsonio.make_temp_dir(run.root, "deploy-profile")  # a dead build's is cleaned by the run's lock
    try:
        tmp = RunDir(scratch)
        write_calibration_file(tmp.calibration, cal)
        first = export_stage(tmp, run.checkpoint, target=choices.target, precision=choices.precision, model=model)
        backend = measure_backend(first, say)
        batches = profile_batches(choices.target, choices.batch)
        say(f"profiling the unpruned network on {backend} ({profile_device}), batches {batches}...")
        prof = profile_bundle(first, backend=backend, device=profile_device, batches=batches)
        cm = fit_cost_model(prof)
        cm.check_bundle(first.manifest.checksum)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    cm.save(run.costmodel)
    return cm, backend, batches


def _write_choice(run, ckpt, net, costs, res: SearchResult, cm: CostModel, outs, all_scores, temps,
                  calibration_error, choices) -> None:
    """pruned.pt (+ .json) and calibration.json of the chosen deployment, in the formats prune and calibrate write."""
    from edgeexit.aep import aep_weights
    from edgeexit.calibrate.calibration import write_calibration_file
    from edgeexit.pipeline import write_pruned
    from edgeexit.prune import PruneResult

    chosen, E = res.chosen, net.num_exits
    ks = list(chosen.exits)
    seg_p, seg_m = np.cumsum(costs.segment_params), np.cumsum(costs.segment_macs)

    def sizes(kept: list[int]) -> tuple[float, float]:
        return (float(seg_p[kept[-1]] + np.sum(np.asarray(costs.head_params)[kept])),
                float(seg_m[kept[-1]] + np.sum(np.asarray(costs.head_macs)[kept])))

    if ks == list(range(E)):
        run.pruned.unlink(missing_ok=True)  # every exit kept: the trained checkpoint ships as it is
        run.pruned_json.unlink(missing_ok=True)
    else:
        mode = ckpt["train_config"].get("weight_mode", "unif")
        params, macs = sizes(ks)
        full_params, full_macs = sizes(list(range(E)))
        write_pruned(run, ckpt, net, PruneResult(
            mode=mode, kept_exits=ks, weights=aep_weights(len(ks), mode, "output").tolist(), accuracy=chosen.accuracy,
            params=params, macs=macs, n_samples=res.n_samples, objective="deployment",
            full={"exits": list(range(E)), "accuracy": res.full.accuracy, "params": full_params, "macs": full_macs},
            subsets=[{"exits": d.exits, "accuracy": d.accuracy, "params": sizes(d.exits)[0], "macs": sizes(d.exits)[1],
                      "predicted_ms": d.cost} for d in res.candidates if d.kind != "early_exit" or d is chosen]))
    checkpoint = run.trained()
    cal = deployment_calibration(res, cm, all_scores, outs.logits.argmax(-1), outs.labels, score=choices.score,
                                 exit_names=list(net.exit_names), target=choices.target.name, temperatures=temps)
    cal.provenance = {"checkpoint": checkpoint.name, "checkpoint_sha256": run.sha256(checkpoint),
                      "costmodel_sha256": run.sha256(run.costmodel)}
    if calibration_error:
        cal.calibration_error = {k: [v[i] for i in ks] for k, v in calibration_error.items()}
    write_calibration_file(run.calibration, cal)
    write_search_json(run, res, list(net.exit_names))
    # curves of an earlier MACs calibration describe another network: they must not show up in this report
    run.curves_json.unlink(missing_ok=True)
    run.curves_png.unlink(missing_ok=True)


SEARCH_FORMAT = "edgeexit-search/1"


def search_summary(res: SearchResult, exit_names: list[str]) -> dict:
    """What the report draws of the search (RUN/search.json): every candidate it considered, compactly (kept exits,
    kind, validation accuracy, predicted cost at the operating batch), and the chosen one to match the bundle by."""
    def row(d) -> dict:
        return {"exits": list(d.exits), "kind": d.kind, "accuracy": round(float(d.accuracy), 6),
                "predicted_ms": round(float(d.cost), 6)}

    return {"format": SEARCH_FORMAT, "objective": res.objective.describe(), "unit": res.unit, "batch": res.batch,
            "n_samples": res.n_samples, "exit_names": exit_names, "subsets": res.subsets,
            "seconds": float(res.seconds), "chosen": row(res.chosen), "full": row(res.full),
            "candidates": [row(d) for d in _thin(res.candidates, SEARCH_MAX_ROWS)]}


SEARCH_MAX_ROWS = 2000  # keeps search.json small with 7 exits; the front and every static always stay


def _thin(candidates: list, limit: int) -> list:
    """At most `limit` candidates: the statics, the unsplit model and the accuracy-vs-cost front, then an even
    sample of the rest (enough to show the cloud the search went through)."""
    if len(candidates) <= limit:
        return list(candidates)
    keep, best = set(), -1.0
    for i in sorted(range(len(candidates)), key=lambda i: (candidates[i].cost, -candidates[i].accuracy)):
        if candidates[i].kind != "early_exit" or candidates[i].accuracy > best:
            keep.add(i)
        if candidates[i].accuracy > best:
            best = candidates[i].accuracy
    rest = [i for i in range(len(candidates)) if i not in keep]
    room = max(0, limit - len(keep))
    if room and rest:
        keep.update(rest[j] for j in np.linspace(0, len(rest) - 1, min(room, len(rest))).astype(int))
    return [candidates[i] for i in sorted(keep)]


def write_search_json(run, res: SearchResult, exit_names: list[str]) -> None:
    from edgeexit import jsonio

    jsonio.write_atomic(run.root / "search.json", jsonio.dumps(search_summary(res, exit_names)))


def deployment_calibration(res: SearchResult, cm: CostModel, scores, preds, labels, *, score: str,
                           exit_names: list[str], target: str, temperatures=None):
    """The Calibration of the chosen deployment, as `calibrate` writes one: its kept exits' thresholds (None: +inf,
    nobody leaves there), replayed on the validation set (`scores`, `preds` [E, N] of the unpruned network), costs in
    predicted ms at the operating batch as shipped, and what the report compares (policy_params)."""
    from edgeexit.calibrate.budget import Budget
    from edgeexit.calibrate.calibration import make_calibration

    chosen, obj = res.chosen, res.objective
    ks = list(chosen.exits)
    const, cum = LatencyCost(cm, res.batch).linear(ks)
    # the cumulative ms of answering at each kept exit: exact at batch 1 (a linear stand-in above it)
    run_costs = np.maximum.accumulate(const + np.asarray(cum, dtype=np.float64))
    full_ms = cm.full_ms(res.batch)  # the unsplit model as one plain call: the yardstick
    static = best_static(res)
    params: dict = {"objective": obj.describe(), "batch": int(res.batch), "exits": ",".join(map(str, ks)),
                    "exit_names": ",".join(exit_names[k] for k in ks), "predicted_ms": float(chosen.cost),
                    "search_accuracy": float(chosen.accuracy),
                    "full_predicted_ms": float(full_ms), "full_accuracy": float(res.full.accuracy),
                    "cost_model_error": float(cm.error()), "cost_model_noise": float(cm.noise()),
                    # the exit loop forced to each kept exit, as predicted: the shipped bundle's profile measures the
                    # same runs, a check of the model on another bundle than the one it was fitted on
                    "forced_predicted_ms": ",".join(f"{cm.forced_ms(ks[:j + 1], res.batch):.6g}"
                                                    for j in range(len(ks))) if len(ks) > 1 else None,
                    "cost_backend": cm.backend, "cost_device": cm.device, "search_seconds": float(res.seconds)}
    if obj.max_drop is not None:
        params["max_drop"] = float(obj.max_drop)
    if static is not None:
        params.update(static_exit=int(static.exits[0]), static_name=exit_names[static.exits[0]],
                      static_predicted_ms=float(static.cost), static_accuracy=float(static.accuracy))
    thresholds = [math.inf if t is None else float(t) for t in chosen.thresholds]
    budget = None if obj.latency_ms is None else Budget("ms", float(obj.latency_ms), target)
    return make_calibration("search", score, thresholds, np.asarray(scores)[ks], np.asarray(preds)[ks],
                            np.asarray(labels), run_costs, "ms", budget, obj.latency_ms, reference_cost=float(full_ms),
                            policy_params=params, temperatures=None if temperatures is None else
                            [temperatures[k] for k in ks])
