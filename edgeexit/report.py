"""What people read: the savings report of a bundle (report.json, report.md, PNGs) and the terminal tables.

The report combines three measurements of the same bundle, each refused when it was made from another one:
the evaluation on the test split (accuracy, exit histogram, MACs, end-to-end time against the unsplit model on the
same backend), the profile (per-exit latency on the device, its noise) and the calibration (policy, budget, curves).

Next to the early-exit model it puts the best *static* alternative at equal or better accuracy: the network
truncated at one exit and run alone, or the unsplit model. When such a truncation is faster, it says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.markup import escape
from rich.table import Table

from edgeexit.bundle import Bundle
from edgeexit.errors import ConfigError
from edgeexit.profile import read_profile_json

FORMAT = "edgeexit-report/1"
PNGS = {"accuracy_cost": "report-accuracy-cost.png", "latency": "report-latency.png", "exits": "report-exits.png"}


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def shipped_label(num_exits: int) -> str:
    """What the shipped bundle is called: a bundle of one exit is a static truncation, not early exit."""
    return "static truncation" if num_exits == 1 else "early exit"


def summary_table(result: dict, title: str | None = None) -> Table:
    """The evaluation (eval.json) of a bundle against the unsplit model; a one-exit bundle is called what it is."""
    label = shipped_label(len(result["exit_histogram"]))
    t = Table(title=title or f"{label} vs full model")
    t.add_column("metric")
    t.add_column("full model", justify="right")
    t.add_column(label, justify="right")
    # every string below may come from a file or a device: escaped, so rich never reads it as markup
    t.add_row(f"{escape(str(result['split']))} accuracy ({result['samples']} samples)", _pct(result["full_accuracy"]),
              _pct(result["early_exit_accuracy"]))
    t.add_row("mean MACs (fraction of full)", "1.000", f"{result['macs_fraction']:.3f}")
    for batch, ratio in result["latency_fraction_by_batch"].items():
        t.add_row(f"measured time on {escape(str(result['backend']))}, batch {escape(str(batch))} (fraction of full)",
                  "1.000", f"{ratio:.3f}")
    t.add_row("exit histogram", "", " / ".join(str(h) for h in result["exit_histogram"]))
    return t


def _same_bundle(what: str, content: str | None, bundle: Bundle, hint: str) -> None:
    """Refuse figures measured on another bundle (reports attached since do not count: same content)."""
    if content != bundle.manifest.content_sha256:
        raise ConfigError(f"{what} was made from another bundle than this one", got=content,
                          expected=bundle.manifest.content_sha256, hint=hint)


def _ms(s: dict | None) -> dict | None:
    return None if s is None else {k: s[k] for k in ("p50_ms", "p10_ms", "p90_ms")}


def _rel(predicted: float | None, measured: float | None) -> float | None:
    return None if predicted is None or not measured else predicted / measured - 1


def predicted_block(cal: dict | None, prof: dict, ev: dict) -> dict | None:
    """Predicted next to measured, for a bundle the latency-first build chose (its calibration's policy_params carry
    what the cost model predicted at the operating batch); None for other bundles.

    Measured, at the operating batch b: the shipped early-exit loop end to end on the evaluation's split, as a
    fraction of the unsplit model timed beside it (eval), times the unsplit model's p50 in the shipped bundle's
    profile; when the evaluation did not time batch b, the profile's per-exit times weighted by where the samples
    answered."""
    p = (cal or {}).get("policy_params") or {}
    if "predicted_ms" not in p:
        return None
    b = str(int(p["batch"]))
    table = prof["batches"].get(b)
    full_ms = None if table is None else table["full"]["p50_ms"]
    ratio = ev["latency_fraction_by_batch"].get(b)
    if ratio is not None and full_ms is not None:
        shipped = "the static truncation" if len(ev["exit_histogram"]) == 1 else "the early-exit loop"
        measured, how = ratio * full_ms, f"{shipped} on the {ev['split']} split (eval) x the unsplit p50"
    elif table is not None:
        n = max(1, sum(ev["exit_histogram"]))
        measured = sum(h / n * row["cumulative"]["p50_ms"] for h, row in zip(ev["exit_histogram"], table["exits"]))
        how = "the profile's per-exit times, weighted by where the samples answered"
    else:
        measured, how = None, f"batch {b} not profiled"
    check = forced_check(p.get("forced_predicted_ms"), table)
    static = None
    if "static_exit" in p:
        static = {"exit": p["static_exit"], "name": p.get("static_name"), "predicted_ms": p["static_predicted_ms"],
                  "val_accuracy": p["static_accuracy"]}
    return {
        "batch": int(b), "objective": p.get("objective"), "cost_backend": p.get("cost_backend"),
        "cost_device": p.get("cost_device"), "cost_model_error": p.get("cost_model_error"),
        "profile_noise": p.get("cost_model_noise"), "measured_how": how,
        "deployment": {"exits": p.get("exits"), "names": p.get("exit_names"), "predicted_ms": p["predicted_ms"],
                       "measured_ms": measured, "relative_error": _rel(p["predicted_ms"], measured),
                       "val_accuracy": (cal or {}).get("accuracy")},
        "best_static": static, "forced_check": check,
        "full": {"predicted_ms": p.get("full_predicted_ms"), "measured_ms": full_ms,
                 "relative_error": _rel(p.get("full_predicted_ms"), full_ms), "val_accuracy": p.get("full_accuracy")},
    }


def forced_check(predicted: str | None, table: dict | None) -> dict | None:
    """The cost model checked on the shipped bundle's own profile: the exit loop forced to each of its exits as
    predicted (from the unpruned network's profile) next to the same runs as measured; None for a one-exit bundle
    (its one plain call is the deployment itself, compared above) or without the table."""
    if not predicted or table is None:
        return None
    try:
        pred = [float(v) for v in str(predicted).split(",")]
    except ValueError:
        return None
    rows = table["exits"]
    if len(pred) != len(rows):
        return None
    errors = [p / r["cumulative"]["p50_ms"] - 1 for p, r in zip(pred, rows)]
    return {"predicted_ms": pred, "measured_ms": [r["cumulative"]["p50_ms"] for r in rows], "relative_error": errors,
            "worst": max(errors, key=abs)}


DEFAULT_MAX_DROP_PT = 0.5  # the allowed accuracy loss when the build did not state one (`build --max-drop`)


def allowed_drop_pt(cal: dict | None) -> tuple[float, str]:
    """The accuracy loss (points below the unsplit model) a winner may have, and where it comes from."""
    p = (cal or {}).get("policy_params") or {}
    if isinstance(p.get("max_drop"), (int, float)):
        return float(p["max_drop"]), "the build's --max-drop"
    return DEFAULT_MAX_DROP_PT, "the default"


def target_max_batch(m) -> int:
    """The largest batch the bundle's target runs: export records the target's batch range in the manifest
    (`batch.max`), so the report reads no target file (and one edited or missing on this machine changes nothing)."""
    return int(m.batch.max)


def _batches_run(by_batch: dict, batch_max: int) -> dict:
    """The evaluation's timings at batch sizes the target runs (none above its largest batch); all of them when
    that would leave none, so the report still has its one measured time."""
    kept = {b: r for b, r in by_batch.items() if int(b) <= batch_max}
    return kept or dict(by_batch)


def _tail_cut(m) -> bool:
    """Pruning cut the network's tail: the bundle's last exit answers before the unsplit model's end."""
    return m.exits[-1].cumulative_macs < m.full_macs


def static_baseline(m, ev: dict, prof: dict, exits: list[dict], ee_fraction: float,
                    drop: tuple[float, str]) -> dict:
    """The honest baseline and the verdict. Candidates: the network truncated at each exit and run alone (measured),
    the network truncated at the bundle's last exit when pruning cut the tail (estimated from the split network:
    its segments without the earlier heads) and the unsplit model. A winner never loses more accuracy than the
    allowed drop, and none is declared from a noisy profile."""
    drop_pt, drop_from = drop
    full_acc, ee_acc = ev["full_accuracy"], ev["early_exit_accuracy"]
    floor = full_acc - drop_pt / 100
    candidates = [{"choice": f"truncated at exit {r['index']} ({r['name']})", "exit": r["index"],
                   "accuracy": r["accuracy_alone"], "time_fraction": r["static_fraction"], "measured": True}
                  for r in exits if r["static_fraction"] is not None]
    full_ms = prof["batches"][str(prof["batch_size"])]["full"]["p50_ms"]
    if _tail_cut(m) and len(exits) > 1 and exits[-1]["static_fraction"] is None:
        heads = sum(e["head_ms"]["p50_ms"] for e in exits[:-1] if e["head_ms"] is not None)
        est = max(0.0, exits[-1]["cumulative_ms"]["p50_ms"] - heads)
        last = exits[-1]
        candidates.append({"choice": f"truncated at the last kept exit {last['index']} ({last['name']}), estimated",
                           "exit": last["index"], "accuracy": last["accuracy_alone"], "time_fraction": est / full_ms,
                           "measured": False})
    candidates.append({"choice": "the unsplit model", "exit": None, "accuracy": full_acc, "time_fraction": 1.0,
                       "measured": True})
    noise = max(n["noise"] for n in prof["noise"].values())
    bound = next(iter(prof["noise"].values()))["bound"]
    single = len(m.exits) == 1
    # a static (single-exit) bundle is itself a truncation: it is compared with the other truncations, not with
    # "early exit"
    rivals = [c for c in candidates if not (single and c["exit"] == 0)]
    eligible = [c for c in rivals if c["accuracy"] >= floor - 1e-12 and (single or c["accuracy"] >= ee_acc)]
    best = min(eligible, key=lambda c: c["time_fraction"]) if eligible else None
    static_wins = False
    loss = 100 * (full_acc - ee_acc)
    what = "this static truncation" if single else "the early-exit model"
    limit = f"the allowed {drop_pt:g} pt ({drop_from})"
    if not prof["trusted"]:
        verdict = (f"No winner is declared: this profile is noisy (the unsplit model timed twice differs by "
                   f"{100 * noise:.1f} %, bound {100 * bound:.0f} %). Profile again on an idle device: "
                   "edgeexit profile --run-dir RUN.")
    elif loss > drop_pt + 1e-9:
        verdict = (f"No winner is declared: {what} loses {loss:.2f} pt against the unsplit model "
                   f"({_pct(ee_acc)} vs {_pct(full_acc)}), more than {limit}.")
        if best is not None and best["exit"] is not None:
            verdict += (f" {best['choice']} stays within it ({_pct(best['accuracy'])}, {best['time_fraction']:.3f}x "
                        "the unsplit model's time).")
        else:
            verdict += " Build again with a larger --max-drop or a larger budget, or keep the unsplit model."
    elif single:
        head = (f"This bundle is a static truncation at exit {m.exits[0].index} ({m.exits[0].name}): "
                f"{_pct(ee_acc)} ({-loss:+.2f} pt, within {limit}) at {ee_fraction:.3f}x the unsplit model's time.")
        faster = best is not None and best["time_fraction"] < ee_fraction
        if faster and ee_fraction - best["time_fraction"] > noise * ee_fraction:
            static_wins = True
            verdict = head + (f" {best['choice']} is within the drop too and faster ({best['time_fraction']:.3f}x): "
                              "build again to ship it.")
        else:
            verdict = head + " No other choice within the drop is faster beyond this profile's noise."
    elif best is None:
        verdict = (f"Early exit wins: no static choice within {limit} is as accurate as the early-exit model "
                   f"({_pct(ee_acc)}, {ee_fraction:.3f}x the unsplit model's time).")
    elif best["time_fraction"] < ee_fraction and ee_fraction - best["time_fraction"] <= noise * ee_fraction:
        static_wins = True
        verdict = (f"A static model is as good as early exit here: {best['choice']} is as accurate "
                   f"({_pct(best['accuracy'])} vs {_pct(ee_acc)}) and as fast within this "
                   f"profile's noise of {100 * noise:.1f} % ({best['time_fraction']:.3f}x vs {ee_fraction:.3f}x the "
                   "unsplit model's time); it is the simpler thing to deploy.")
    elif best["time_fraction"] < ee_fraction:
        static_wins = True
        verdict = (f"A static model beats early exit here: {best['choice']} is as accurate "
                   f"({_pct(best['accuracy'])} vs {_pct(ee_acc)}) and faster "
                   f"({best['time_fraction']:.3f}x vs {ee_fraction:.3f}x the unsplit model's time). Deploy it instead, "
                   "or calibrate for a tighter budget.")
    else:
        verdict = (f"Early exit wins: the fastest static choice at least as accurate, {best['choice']}, takes "
                   f"{best['time_fraction']:.3f}x the unsplit model's time; early exit takes {ee_fraction:.3f}x.")
    return {"candidates": candidates, "best": best, "early_exit_fraction": ee_fraction, "static_wins": static_wins,
            "single_exit": single, "allowed_drop_pt": drop_pt, "allowed_drop_from": drop_from,
            "trusted": bool(prof["trusted"]), "verdict": verdict}


def _shipped_ms(ev: dict, table: dict, b: str) -> float:
    """The shipped bundle's measured ms per call at batch b: the evaluation's end-to-end ratio x the unsplit p50,
    or the profile's per-exit times weighted by where the samples answered."""
    ratio = ev["latency_fraction_by_batch"].get(b)
    if ratio is not None:
        return ratio * table["full"]["p50_ms"]
    n = max(1, sum(ev["exit_histogram"]))
    return sum(h / n * row["cumulative"]["p50_ms"] for h, row in zip(ev["exit_histogram"], table["exits"]))


def _search_matches(search: dict | None, pred: dict | None) -> bool:
    """search.json describes this bundle's search: same operating batch and chosen deployment."""
    if not search or not pred or search.get("format") != "edgeexit-search/1":
        return False
    ch = search.get("chosen") or {}
    exits = pred["deployment"]["exits"]
    return (search.get("batch") == pred["batch"] and ",".join(map(str, ch.get("exits", []))) == exits
            and abs(float(ch.get("predicted_ms", -1)) - float(pred["deployment"]["predicted_ms"])) <= 1e-6 * max(
                1.0, abs(float(pred["deployment"]["predicted_ms"]))))


def front_data(m, ev: dict, prof: dict, exits: list[dict], pred: dict | None, search: dict | None) -> dict:
    """The accuracy-vs-latency front on the device, in ms per call at the operating batch (the search's batch, else
    the profile's): every static truncation, the unsplit model and the shipped bundle as measured (test split),
    and the early-exit candidates the search considered as predicted (validation split)."""
    b = str(pred["batch"]) if pred and str(pred["batch"]) in prof["batches"] else str(prof["batch_size"])
    table = prof["batches"][b]
    statics = [{"exit": e.index, "name": e.name, "accuracy": ev["exit_accuracy"][e.index],
                "ms": row["static"]["p50_ms"]}
               for e, row in zip(m.exits, table["exits"]) if row.get("static") is not None]
    if len(m.exits) == 1 or (_tail_cut(m) and table["exits"][-1].get("static") is None and len(m.exits) > 1
                             and all(r.get("head") is not None for r in table["exits"][:-1])):
        # the bundle's last exit run as a truncation: a single-exit bundle is exactly that; a pruned one without the
        # earlier heads (estimated)
        last = table["exits"][-1]
        heads = sum(r["head"]["p50_ms"] for r in table["exits"][:-1])
        statics.append({"exit": m.exits[-1].index, "name": m.exits[-1].name,
                        "accuracy": ev["exit_accuracy"][-1], "ms": max(0.0, last["cumulative"]["p50_ms"] - heads),
                        "estimated": len(m.exits) > 1})
    candidates, source = [], None
    if _search_matches(search, pred):
        source = "search.json"
        candidates = [{"exits": c["exits"], "accuracy": c["accuracy"], "ms": c["predicted_ms"]}
                      for c in search["candidates"] if c.get("kind") == "early_exit"]
    return {"batch": int(b), "backend": prof["backend"], "unit": "ms per call", "trusted": bool(prof["trusted"]),
            "statics": statics, "full": {"accuracy": ev["full_accuracy"], "ms": table["full"]["p50_ms"]},
            "shipped": {"accuracy": ev["early_exit_accuracy"], "ms": _shipped_ms(ev, table, b),
                        "exits": [e.index for e in m.exits], "single_exit": len(m.exits) == 1},
            "candidates": candidates, "candidates_source": source}


def report_data(bundle: Bundle, ev: dict, prof: dict, cal: dict | None = None, curves: dict | None = None,
                search: dict | None = None) -> dict:
    """report.json: the figures of the report, from the evaluation, the profile, the calibration and (a latency-first
    build's) the search's candidates (RUN/search.json)."""
    _same_bundle("the evaluation (eval.json)", ev.get("bundle_content_sha256"), bundle,
                 "evaluate it again: edgeexit eval RUN/bundle --json RUN/eval.json")
    _same_bundle("the profile (profile.json)", (prof.get("provenance") or {}).get("bundle_content_sha256"), bundle,
                 "profile it again: edgeexit profile --run-dir RUN")
    m = bundle.manifest
    batch = str(prof["batch_size"])
    table = prof["batches"][batch]
    n = ev["samples"]
    macs_saving = 1 - ev["macs_fraction"]
    runs = _batches_run(ev["latency_fraction_by_batch"], target_max_batch(m))
    latency = {b: {"fraction": r, "saving": 1 - r, "realisation": (1 - r) / macs_saving if macs_saving > 0 else None}
               for b, r in runs.items()}
    exits = []
    for e, row in zip(m.exits, table["exits"]):
        answered = ev["exit_histogram"][e.index]
        exits.append({
            "index": e.index, "name": e.name, "threshold": e.threshold, "answered": answered,
            "answered_fraction": answered / n if n else 0.0, "accuracy_alone": ev["exit_accuracy"][e.index],
            "macs_fraction": e.cumulative_macs / m.full_macs,
            "cumulative_ms": _ms(row["cumulative"]), "time_fraction": row["time_fraction"],
            "segment_ms": _ms(row["segment"]), "head_ms": _ms(row["head"]), "static_ms": _ms(row["static"]),
            "static_fraction": row.get("static_fraction"),
        })
    batch_max = target_max_batch(m)
    pred = predicted_block(cal, prof, ev)
    ee_fraction = latency[min(latency, key=int)]["fraction"]
    baseline = static_baseline(m, ev, prof, exits, ee_fraction, allowed_drop_pt(cal))
    return {
        "format": FORMAT, "bundle_content_sha256": m.content_sha256, "target": m.target, "precision": m.precision,
        "backend": ev["backend"], "device": prof.get("device", "local"), "profile_backend": prof["backend"],
        "split": ev["split"], "samples": n,
        "accuracy": {"full": ev["full_accuracy"], "early_exit": ev["early_exit_accuracy"],
                     "delta_pt": 100 * (ev["early_exit_accuracy"] - ev["full_accuracy"])},
        "macs": {"full": m.full_macs, "mean": ev["mean_macs"], "fraction": ev["macs_fraction"], "saving": macs_saving},
        "latency": latency, "params": int(sum(e.params for e in m.exits)),
        "exit_histogram": ev["exit_histogram"], "exits": exits,
        "target_max_batch": batch_max, "static_baseline": baseline,
        "profile": {"batch_size": int(batch), "trusted": prof["trusted"], "noise": prof["noise"],
                    "full_ms": _ms(table["full"]), "forced_final": table["forced_final"],
                    "latency_ms": table["latency_ms"], "device_info": prof.get("device_info"),
                    "versions": prof.get("versions")},
        "calibration": None if cal is None else {
            k: cal.get(k) for k in ("policy", "score_kind", "budget", "accuracy", "cost_fraction", "exit_fractions")},
        "curves": curves,
        "predicted": pred,
        "front": front_data(m, ev, prof, exits, pred, search),
    }


def markdown(rep: dict) -> str:
    acc, lat, prof = rep["accuracy"], rep["latency"], rep["profile"]
    ff = prof["forced_final"]
    lines = [
        "# edgeexit report", "",
        f"Target `{rep['target']}` ({rep['precision']}), measured on `{rep['backend']}` on {rep['device']}; "
        f"the {rep['split']} split, {rep['samples']} samples; the unsplit original model on the same backend.", "",
        f"| | unsplit model | {'shipped static truncation' if rep['static_baseline'].get('single_exit') else 'early exit'} |",
        "|---|---:|---:|",
        f"| accuracy | {_pct(acc['full'])} | {_pct(acc['early_exit'])} ({acc['delta_pt']:+.2f} pt) |",
        f"| mean MACs per image | {rep['macs']['full']:,} | {rep['macs']['mean']:,.0f} ({rep['macs']['fraction']:.3f}x) |",
        *[f"| measured time, batch {b} | 1.000 | {v['fraction']:.3f}x (realisation {v['realisation']:.2f}) |"
          if v["realisation"] is not None else f"| measured time, batch {b} | 1.000 | {v['fraction']:.3f}x |"
          for b, v in lat.items()],
        f"| parameters (shipped network) | | {rep['params']:,} |", "",
        "Realisation = latency saving / MAC saving (1.0: every MAC saved is time saved).", "",
        "## Static baseline", "", rep["static_baseline"]["verdict"], "",
        "| choice | accuracy | time / unsplit |", "|---|---:|---:|",
        *[f"| {c['choice']} | {_pct(c['accuracy'])} | {c['time_fraction']:.3f}x |" for c in rep["static_baseline"]["candidates"]],
        f"| **{'this bundle (static truncation)' if rep['static_baseline'].get('single_exit') else 'early exit'}** | "
        f"{_pct(acc['early_exit'])} | {rep['static_baseline']['early_exit_fraction']:.3f}x |", "",
        f"A winner may lose at most {rep['static_baseline']['allowed_drop_pt']:g} pt against the unsplit model "
        f"({rep['static_baseline']['allowed_drop_from']}).", "",
        f"## Per-exit latency ({rep['profile_backend']}, batch {prof['batch_size']}, p50 [p10-p90] ms)", "",
        "| exit | after | threshold | answered | accuracy alone | MACs / full | to answer here | segment | head | "
        "truncated here, alone |", "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def cell(s):
        return "" if s is None else f"{s['p50_ms']:.3f} [{s['p10_ms']:.3f}-{s['p90_ms']:.3f}]"

    for e in rep["exits"]:
        thr = "-" if e["threshold"] is None else f"{e['threshold']:.4f}"
        lines.append(f"| {e['index']} | {e['name']} | {thr} | {e['answered']} ({_pct(e['answered_fraction'])}) | "
                     f"{_pct(e['accuracy_alone'])} | {e['macs_fraction']:.3f} | {cell(e['cumulative_ms'])} | "
                     f"{cell(e['segment_ms'])} | {cell(e['head_ms'])} | {cell(e['static_ms'])} |")
    lines.append(f"| full | unsplit model | | | {_pct(acc['full'])} | 1.000 | {cell(prof['full_ms'])} | | | |")
    noise = prof["noise"]
    worst = max(v["noise"] for v in noise.values())
    lines += [
        "", f"Forced-final exit: {ff['ratio']:.3f}x the unsplit model; the intermediate heads account for "
        f"{100 * ff['heads_fraction']:.1f} % of it. "
        + ("Within the unsplit model's spread plus the heads." if ff["explained"] else
           f"{1e3 * ff['unexplained_ms']:.1f} us per call beyond the unsplit model's spread plus the heads "
           "(the cost of running the network as separate programs)."),
        "", ("The profile's own noise (the unsplit model timed twice in the same rounds) is "
             f"{100 * worst:.1f} %, within the {100 * next(iter(noise.values()))['bound']:.0f} % bound."
             if prof["trusted"] else
             f"**This profile is noisy**: the unsplit model timed twice in the same rounds differs by up to "
             f"{100 * worst:.1f} % (bound {100 * next(iter(noise.values()))['bound']:.0f} %); do not trust "
             "differences smaller than that, and profile again on an idle device."),
        "", f"![accuracy vs cost]({PNGS['accuracy_cost']})", "", f"![per-exit latency]({PNGS['latency']})", "",
        f"![exit histogram]({PNGS['exits']})", "",
    ]
    if rep.get("predicted"):
        lines[-1:-1] = predicted_lines(rep["predicted"])
    if rep["calibration"]:
        c = rep["calibration"]
        lines[-1:-1] = ["## Calibration", "", f"Policy `{c['policy']}` on score `{c['score_kind']}`, budget "
                        f"{c['budget']}: expected {_pct(c['accuracy'])} at {c['cost_fraction']:.3f}x the unsplit "
                        "model's cost on the calibration set.", ""]
    return "\n".join(lines)


def _ms_cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.4g}"


def _err_cell(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:+.1f} %"


def predicted_lines(pr: dict) -> list[str]:
    """The report's "Predicted vs measured" section (Markdown)."""
    d, full, st = pr["deployment"], pr["full"], pr["best_static"]
    lines = ["## Predicted vs measured", "",
             f"Chosen by the deployment search ({pr['objective']}) from a cost model of the unpruned network profiled "
             f"on `{pr['cost_backend']}` ({pr['cost_device']}); batch {pr['batch']}. The model's leave-one-out error "
             f"is {100 * pr['cost_model_error']:.1f} %, its profile's noise {100 * pr['profile_noise']:.1f} %. "
             f"Measured: {pr['measured_how']}. Every deployment is costed as the bundle runs it: a single exit (a "
             "static truncation) and the unsplit model as one plain call, more exits through the exit loop."
             + ("" if not pr.get("forced_check") else
                f" On the shipped bundle's own profile, the exit loop forced to each of its exits was predicted within "
                f"{100 * abs(pr['forced_check']['worst']):.1f} % (worst: "
                f"{', '.join(_err_cell(e) for e in pr['forced_check']['relative_error'])}).")
             + (" At batch > 1 the compaction copies (gathering the samples that go on) are not in the model."
                if pr["batch"] > 1 else ""), "",
             "| | exits | val accuracy | predicted ms | measured ms | error |", "|---|---|---:|---:|---:|---:|",
             f"| **shipped** | {d['names']} | {_pct(d['val_accuracy'])} | {_ms_cell(d['predicted_ms'])} | "
             f"{_ms_cell(d['measured_ms'])} | {_err_cell(d['relative_error'])} |"]
    if st is not None:
        lines.append(f"| best static truncation | {st['name']} | {_pct(st['val_accuracy'])} | "
                     f"{_ms_cell(st['predicted_ms'])} | | |")
    lines += [f"| unsplit model | all | {_pct(full['val_accuracy'])} | {_ms_cell(full['predicted_ms'])} | "
              f"{_ms_cell(full['measured_ms'])} | {_err_cell(full['relative_error'])} |", ""]
    return lines


def _figure(width: float, height: float, cols: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, cols, i + 1) for i in range(cols)]


def plot_front(ax, rep: dict) -> None:
    """The measured accuracy-vs-latency front on the device (report.json's `front`): the search's early-exit
    candidates as predicted (small, faint), every static truncation, the unsplit model and the shipped bundle as
    measured."""
    fr, split = rep["front"], rep["split"]
    cands = fr["candidates"]
    if cands:
        ax.scatter([c["ms"] for c in cands], [100 * c["accuracy"] for c in cands], s=12, color="tab:blue", alpha=0.45,
                   linewidths=0, label=f"early-exit candidates of the search ({len(cands)}; predicted ms, validation)")
    st = sorted(fr["statics"], key=lambda c: c["ms"])
    line = sorted(st + [fr["full"]], key=lambda c: c["ms"])  # the unsplit model is the last truncation
    xs, ys = [c["ms"] for c in line], [100 * c["accuracy"] for c in line]
    est = "; ~: estimated from the split network" if any(c.get("estimated") for c in st) else ""
    ax.plot(xs, ys, "s--", color="tab:gray", label=f"static truncations (measured, {split}{est})")
    for c in st:
        ax.annotate(f"{c['exit']}" + ("~" if c.get("estimated") else ""), (c["ms"], 100 * c["accuracy"]),
                    textcoords="offset points", xytext=(4, -10), fontsize=7, color="dimgray")
    ax.plot([fr["full"]["ms"]], [100 * fr["full"]["accuracy"]], "D", color="black",
            label=f"unsplit model (measured): {fr['full']['ms']:.3g} ms")
    sh = fr["shipped"]
    ax.plot([sh["ms"]], [100 * sh["accuracy"]], "*", markersize=15, color="tab:red",
            label=f"shipped{' (static)' if sh['single_exit'] else ''} (measured, {split}): {sh['ms']:.3g} ms, "
                  f"{100 * sh['accuracy']:.2f} %")
    pts = ys + [100 * sh["accuracy"]]
    lo = min(pts)
    top = max(pts + ([100 * c["accuracy"] for c in cands] if cands else []))
    # the search's cloud reaches accuracies far below anything shippable: keep the axis on the front
    ax.set_ylim(max(0.0, lo - max(2.0, 0.15 * (top - lo))), min(100.0, top + max(0.5, 0.05 * (top - lo))))
    ax.set_xlim(0, 1.08 * max(xs + [sh["ms"]] + [c["ms"] for c in cands]))
    ax.set_xlabel(f"ms per call at batch {fr['batch']} (p50, {fr['backend']}"
                  f"{', NOISY profile' if not fr['trusted'] else ''})")
    ax.set_title(f"accuracy vs measured latency on the device, batch {fr['batch']}")


def latency_chart_words(rep: dict) -> dict[str, str]:
    """The per-exit latency chart's title and legend: a one-exit bundle is a static truncation (one plain call, no
    exit loop), and the unsplit model stands for the truncation at the last exit only when that is the original
    final exit."""
    exits = rep["exits"]
    ends_at_final = exits[-1]["macs_fraction"] >= 1 - 1e-9
    single = len(exits) == 1
    where = f"{rep['profile_backend']}, batch {rep['profile']['batch_size']}"
    return {"title": f"{'latency of the shipped static truncation' if single else 'per-exit latency'}, {where}",
            "shipped": "the shipped static truncation (one call)" if single else
                       "to answer here (split network, earlier heads included)",
            "static": "network truncated here, alone" + (" (last: the unsplit model)" if ends_at_final else "")}


def plot_report(rep: dict, out: Path) -> dict[str, Path]:
    """The three PNGs of the report, written in `out`."""
    out = Path(out)
    acc, exits = rep["accuracy"], rep["exits"]
    paths = {k: out / v for k, v in PNGS.items()}

    fig, (a_macs, a_ms) = _figure(12, 5.0, 2)
    alone = [100 * e["accuracy_alone"] for e in exits]
    a_macs.plot([100 * e["macs_fraction"] for e in exits], alone, "s--", color="tab:gray",
                label=f"each exit alone ({rep['split']})")
    curves = rep.get("curves") or {}
    bud = curves.get("budgeted")
    if bud and bud.get("cost_unit") == "macs":
        a_macs.plot(100 * np.asarray(bud["cost_fraction"]), 100 * np.asarray(bud["accuracy"]), "o-", markersize=3,
                    color="tab:blue", alpha=0.6, label="early exit at other budgets (validation)")
    a_macs.plot([100], [100 * acc["full"]], "D", color="black", label="unsplit model")
    x = 100 * rep["macs"]["fraction"]
    a_macs.plot([x], [100 * acc["early_exit"]], "*", markersize=15, color="tab:red",
                label=f"shipped ({rep['split']}): {x:.1f} %, {100 * acc['early_exit']:.2f} %")
    a_macs.set_xlabel("mean MACs per image, % of the unsplit model")
    a_macs.set_title("accuracy vs cost in MACs")
    plot_front(a_ms, rep)
    a_macs.margins(0.08)
    for ax in (a_macs, a_ms):
        ax.set_ylabel("top-1 accuracy, %")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
    fig.tight_layout()
    fig.savefig(paths["accuracy_cost"])

    fig, (ax,) = _figure(7, 4.2)
    idx = np.arange(len(exits))
    w = 0.38

    words = latency_chart_words(rep)
    ends_at_final = exits[-1]["macs_fraction"] >= 1 - 1e-9

    def bars(offset, key, label, color):
        rows = [(i, e[key]) for i, e in enumerate(exits) if e[key] is not None]
        if key == "static_ms" and ends_at_final:  # truncated at the original final exit: the unsplit model itself
            rows.append((len(exits) - 1, rep["profile"]["full_ms"]))
        if not rows:
            return
        xs = np.array([i for i, _ in rows]) + offset
        p50 = np.array([s["p50_ms"] for _, s in rows])
        err = np.array([[s["p50_ms"] - s["p10_ms"] for _, s in rows], [s["p90_ms"] - s["p50_ms"] for _, s in rows]])
        ax.bar(xs, p50, w, yerr=err, capsize=3, label=label, color=color)

    bars(-w / 2, "cumulative_ms", words["shipped"], "tab:blue")
    bars(w / 2, "static_ms", words["static"], "tab:gray")
    full = rep["profile"]["full_ms"]
    ax.axhline(full["p50_ms"], color="black", linewidth=1, label="unsplit model (p10-p90 shaded)")
    ax.axhspan(full["p10_ms"], full["p90_ms"], color="black", alpha=0.1)
    ax.set_xticks(idx, [f"{e['index']}: {e['name']}" for e in exits], fontsize=8)
    ax.set_ylabel("ms per batch (p50, bars p10-p90)")
    ax.set_title(words["title"]
                 + ("" if rep["profile"]["trusted"] else " (NOISY profile)"))
    ax.legend(fontsize=7, loc="upper left")
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(paths["latency"])

    fig, (ax,) = _figure(6, 3.8)
    n = max(1, rep["samples"])
    counts = rep["exit_histogram"]
    ax.bar(idx, counts, color="tab:blue")
    for i, c in enumerate(counts):
        ax.annotate(f"{100 * c / n:.1f} %", (i, c), ha="center", textcoords="offset points", xytext=(0, 3), fontsize=8)
    ax.set_xticks(idx, [f"{e['index']}: {e['name']}" for e in exits], fontsize=8)
    ax.set_ylabel(f"samples answered ({rep['split']}, {rep['samples']})")
    ax.set_title("where samples exit")
    ax.set_ylim(0, max(counts) * 1.15 + 1)
    fig.tight_layout()
    fig.savefig(paths["exits"])
    return paths


def report_table(rep: dict) -> Table:
    t = Table(title=escape(f"savings on {rep['backend']} ({rep['device']}), {rep['split']} split"))
    for col in ("exit", "after", "answered", "alone acc.", "MACs/full", "time/full", "truncated alone/full"):
        t.add_column(col, justify="right")
    for e in rep["exits"]:
        t.add_row(str(e["index"]), escape(e["name"]), f"{e['answered']}", _pct(e["accuracy_alone"]), f"{e['macs_fraction']:.3f}",
                  f"{e['time_fraction']:.3f}", "-" if e["static_fraction"] is None else f"{e['static_fraction']:.3f}")
    pr = rep.get("predicted")
    if pr:
        d, st = pr["deployment"], pr["best_static"]
        static = "" if st is None else f"; best static truncation ({st['name']}) predicted {_ms_cell(st['predicted_ms'])} ms"
        fc = pr.get("forced_check")
        check = "" if not fc else f"; its forced exits predicted within {100 * abs(fc['worst']):.1f} %"
        t.caption = escape(f"batch {pr['batch']}: shipped deployment predicted {_ms_cell(d['predicted_ms'])} ms, "
                           f"measured {_ms_cell(d['measured_ms'])} ms ({_err_cell(d['relative_error'])}){check}{static}; "
                           f"unsplit model predicted {_ms_cell(pr['full']['predicted_ms'])} ms, measured "
                           f"{_ms_cell(pr['full']['measured_ms'])} ms; cost model error (leave-one-out) "
                           f"{100 * (pr['cost_model_error'] or 0):.1f} %")
    return t


def _read_first(what: str, paths: list[Path], hint: str, reader=None) -> dict:
    from edgeexit import jsonio

    for p in paths:
        if p.is_file():
            if reader is not None:
                return reader(p)
            try:
                return jsonio.read_json(p)
            except (OSError, ValueError, RecursionError) as err:  # not JSON, bad UTF-8 (a ValueError too)
                raise ConfigError(f"cannot read {what} from {p}", got=str(err)[:200], expected="a JSON document",
                                  hint=hint) from None
    raise ConfigError(f"the report needs {what}", got=f"none of {', '.join(str(p) for p in paths)}",
                      expected="the file", hint=hint)


def report_files(run, bundle: Bundle, ev: dict, prof: dict) -> tuple[dict, dict[str, str | bytes]]:
    """The report of `bundle` from its evaluation and profile (and the calibration it carries, the run's curves),
    and every file that goes under the bundle's report/: the report, its PNGs, the evaluation and profile."""
    import tempfile

    from edgeexit import jsonio

    cal_path = bundle.path("calibration.json")
    cal = jsonio.read_json(cal_path) if cal_path.is_file() else None
    curves = jsonio.read_json(run.curves_json) if run.curves_json.is_file() else None
    search_path = run.root / "search.json"
    try:  # only draws the search's cloud: a missing or unreadable one leaves the plot without it
        search = jsonio.read_json(search_path) if search_path.is_file() else None
    except (OSError, ValueError, RecursionError):
        search = None
    rep = report_data(bundle, ev, prof, cal, curves, search)
    files: dict[str, str | bytes] = {"report.json": jsonio.dumps(rep), "report.md": markdown(rep),
                                     "eval.json": jsonio.dumps(ev), "profile.json": jsonio.dumps(prof)}
    with tempfile.TemporaryDirectory(prefix=".report-", dir=run.root) as tmp:
        for name, path in plot_report(rep, Path(tmp)).items():
            files[path.name] = path.read_bytes()
    if run.curves_png.is_file():
        files[run.curves_png.name] = run.curves_png.read_bytes()
    return rep, files


def keep_in_run(run, files: dict[str, str | bytes]) -> None:
    """The report (JSON, Markdown, PNGs) beside the run's eval.json and profile.json, where people look for it."""
    from edgeexit import jsonio

    for name, data in files.items():
        if name not in ("eval.json", "profile.json", "curves.png", "search.json"):
            jsonio.write_atomic(run.root / name, data)


def write_report(run) -> tuple[dict, Bundle]:
    """`edgeexit report`: report.json, report.md and the PNGs of RUN/bundle again, written in RUN and attached to a
    new version of the bundle (under report/). The evaluation and profile are read from RUN only: the run directory
    is their one source; the bundle's report/ copies are what ships, never read back (see edgeexit/rundir.py).
    (A build attaches its report in the one write of its bundle: edgeexit/recipe.py.)"""
    from edgeexit.bundle import REPORTS, add_files, load_bundle

    bundle = load_bundle(run.bundle)
    ev = _read_first("an evaluation", [run.eval_json], "edgeexit eval RUN/bundle --json RUN/eval.json")
    prof = _read_first("a profile", [run.profile], "edgeexit profile --run-dir RUN", read_profile_json)
    rep, files = report_files(run, bundle, ev, prof)
    keep_in_run(run, files)
    bundle = add_files(bundle, {f"{REPORTS}{k}": v for k, v in files.items()}, run.bundle)
    return rep, bundle
