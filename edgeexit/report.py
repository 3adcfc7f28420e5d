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


def summary_table(result: dict, title: str = "early exit vs full model") -> Table:
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("full model", justify="right")
    t.add_column("early exit", justify="right")
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
        measured, how = ratio * full_ms, f"the early-exit loop on the {ev['split']} split (eval) x the unsplit p50"
    elif table is not None:
        n = max(1, sum(ev["exit_histogram"]))
        measured = sum(h / n * row["cumulative"]["p50_ms"] for h, row in zip(ev["exit_histogram"], table["exits"]))
        how = "the profile's per-exit times, weighted by where the samples answered"
    else:
        measured, how = None, f"batch {b} not profiled"
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
        "best_static": static,
        "full": {"predicted_ms": p.get("full_predicted_ms"), "measured_ms": full_ms,
                 "relative_error": _rel(p.get("full_predicted_ms"), full_ms), "val_accuracy": p.get("full_accuracy")},
    }


def report_data(bundle: Bundle, ev: dict, prof: dict, cal: dict | None = None, curves: dict | None = None) -> dict:
    """report.json: the figures of the report, from the evaluation, the profile and the calibration."""
    _same_bundle("the evaluation (eval.json)", ev.get("bundle_content_sha256"), bundle,
                 "evaluate it again: edgeexit eval RUN/bundle --json RUN/eval.json")
    _same_bundle("the profile (profile.json)", (prof.get("provenance") or {}).get("bundle_content_sha256"), bundle,
                 "profile it again: edgeexit profile --run-dir RUN")
    m = bundle.manifest
    batch = str(prof["batch_size"])
    table = prof["batches"][batch]
    n = ev["samples"]
    macs_saving = 1 - ev["macs_fraction"]
    latency = {b: {"fraction": r, "saving": 1 - r, "realisation": (1 - r) / macs_saving if macs_saving > 0 else None}
               for b, r in ev["latency_fraction_by_batch"].items()}
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
    # The honest baseline: every static choice at least as accurate as the early-exit model, the fastest of them.
    ee_fraction = latency[min(latency, key=int)]["fraction"]
    candidates = [{"choice": f"truncated at exit {r['index']} ({r['name']})", "exit": r["index"],
                   "accuracy": r["accuracy_alone"], "time_fraction": r["static_fraction"]}
                  for r in exits if r["static_fraction"] is not None]
    candidates.append({"choice": "the unsplit model", "exit": None, "accuracy": ev["full_accuracy"], "time_fraction": 1.0})
    eligible = [c for c in candidates if c["accuracy"] >= ev["early_exit_accuracy"]]
    best = min(eligible, key=lambda c: c["time_fraction"]) if eligible else None
    noise = max(n["noise"] for n in prof["noise"].values())
    static_wins = best is not None and best["time_fraction"] < ee_fraction
    tie = static_wins and ee_fraction - best["time_fraction"] <= noise * ee_fraction
    if best is None:
        verdict = "No static choice is as accurate as the early-exit model."
    elif tie:
        verdict = (f"A static model is as good as early exit here: {best['choice']} is as accurate "
                   f"({_pct(best['accuracy'])} vs {_pct(ev['early_exit_accuracy'])}) and as fast within this "
                   f"profile's noise of {100 * noise:.1f} % ({best['time_fraction']:.3f}x vs {ee_fraction:.3f}x the "
                   "unsplit model's time); it is the simpler thing to deploy.")
    elif static_wins:
        verdict = (f"A static model beats early exit here: {best['choice']} is as accurate "
                   f"({_pct(best['accuracy'])} vs {_pct(ev['early_exit_accuracy'])}) and faster "
                   f"({best['time_fraction']:.3f}x vs {ee_fraction:.3f}x the unsplit model's time). Deploy it instead, "
                   "or calibrate for a tighter budget.")
    else:
        verdict = (f"Early exit wins: the fastest static choice at least as accurate, {best['choice']}, takes "
                   f"{best['time_fraction']:.3f}x the unsplit model's time; early exit takes {ee_fraction:.3f}x.")
    return {
        "format": FORMAT, "bundle_content_sha256": m.content_sha256, "target": m.target, "precision": m.precision,
        "backend": ev["backend"], "device": prof.get("device", "local"), "profile_backend": prof["backend"],
        "split": ev["split"], "samples": n,
        "accuracy": {"full": ev["full_accuracy"], "early_exit": ev["early_exit_accuracy"],
                     "delta_pt": 100 * (ev["early_exit_accuracy"] - ev["full_accuracy"])},
        "macs": {"full": m.full_macs, "mean": ev["mean_macs"], "fraction": ev["macs_fraction"], "saving": macs_saving},
        "latency": latency, "params": int(sum(e.params for e in m.exits)),
        "exit_histogram": ev["exit_histogram"], "exits": exits,
        "static_baseline": {"candidates": candidates, "best": best, "early_exit_fraction": ee_fraction,
                            "static_wins": static_wins, "verdict": verdict},
        "profile": {"batch_size": int(batch), "trusted": prof["trusted"], "noise": prof["noise"],
                    "full_ms": _ms(table["full"]), "forced_final": table["forced_final"],
                    "latency_ms": table["latency_ms"], "device_info": prof.get("device_info"),
                    "versions": prof.get("versions")},
        "calibration": None if cal is None else {
            k: cal.get(k) for k in ("policy", "score_kind", "budget", "accuracy", "cost_fraction", "exit_fractions")},
        "curves": curves,
        "predicted": predicted_block(cal, prof, ev),
    }


def markdown(rep: dict) -> str:
    acc, lat, prof = rep["accuracy"], rep["latency"], rep["profile"]
    ff = prof["forced_final"]
    lines = [
        "# edgeexit report", "",
        f"Target `{rep['target']}` ({rep['precision']}), measured on `{rep['backend']}` on {rep['device']}; "
        f"the {rep['split']} split, {rep['samples']} samples; the unsplit original model on the same backend.", "",
        "| | unsplit model | early exit |", "|---|---:|---:|",
        f"| accuracy | {_pct(acc['full'])} | {_pct(acc['early_exit'])} ({acc['delta_pt']:+.2f} pt) |",
        f"| mean MACs per image | {rep['macs']['full']:,} | {rep['macs']['mean']:,.0f} ({rep['macs']['fraction']:.3f}x) |",
        *[f"| measured time, batch {b} | 1.000 | {v['fraction']:.3f}x (realisation {v['realisation']:.2f}) |"
          if v["realisation"] is not None else f"| measured time, batch {b} | 1.000 | {v['fraction']:.3f}x |"
          for b, v in lat.items()],
        f"| parameters (early-exit network) | | {rep['params']:,} |", "",
        "Realisation = latency saving / MAC saving (1.0: every MAC saved is time saved).", "",
        "## Static baseline", "", rep["static_baseline"]["verdict"], "",
        "| choice | accuracy | time / unsplit |", "|---|---:|---:|",
        *[f"| {c['choice']} | {_pct(c['accuracy'])} | {c['time_fraction']:.3f}x |" for c in rep["static_baseline"]["candidates"]],
        f"| **early exit** | {_pct(acc['early_exit'])} | {rep['static_baseline']['early_exit_fraction']:.3f}x |", "",
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
             f"Measured: {pr['measured_how']}. Every deployment, a single exit too, is costed as the bundle runs "
             "it, through the exit loop; the unsplit model as one plain call.", "",
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


def plot_report(rep: dict, out: Path) -> dict[str, Path]:
    """The three PNGs of the report, written in `out`."""
    out = Path(out)
    acc, exits = rep["accuracy"], rep["exits"]
    paths = {k: out / v for k, v in PNGS.items()}
    ee_fraction = rep["static_baseline"]["early_exit_fraction"]

    fig, (a_macs, a_ms) = _figure(11, 4.4, 2)
    alone = [100 * e["accuracy_alone"] for e in exits]
    a_macs.plot([100 * e["macs_fraction"] for e in exits], alone, "s--", color="tab:gray",
                label=f"each exit alone ({rep['split']})")
    statics = [e for e in exits if e["static_fraction"] is not None]
    a_ms.plot([100 * e["static_fraction"] for e in statics] + [100.0],
              [100 * e["accuracy_alone"] for e in statics] + [100 * acc["full"]], "s--", color="tab:gray",
              label="truncated network, run alone (measured)")
    curves = rep.get("curves") or {}
    bud = curves.get("budgeted")
    if bud and bud.get("cost_unit") == "macs":
        a_macs.plot(100 * np.asarray(bud["cost_fraction"]), 100 * np.asarray(bud["accuracy"]), "o-", markersize=3,
                    color="tab:blue", alpha=0.6, label="early exit at other budgets (validation)")
        lat, full_ms = np.asarray(rep["profile"]["latency_ms"]), rep["profile"]["full_ms"]["p50_ms"]
        est = [100 * float(np.dot(f, lat)) / full_ms for f in bud["exit_fractions"]]
        a_ms.plot(est, 100 * np.asarray(bud["accuracy"]), "o-", markersize=3, color="tab:blue", alpha=0.6,
                  label="early exit at other budgets (validation; ms from the per-exit table)")
    for ax, x in ((a_macs, 100 * rep["macs"]["fraction"]), (a_ms, 100 * ee_fraction)):
        ax.plot([100], [100 * acc["full"]], "D", color="black", label="unsplit model")
        ax.plot([x], [100 * acc["early_exit"]], "*", markersize=15, color="tab:red",
                label=f"early exit ({rep['split']}): {x:.1f} %, {100 * acc['early_exit']:.2f} %")
        ax.set_ylabel("top-1 accuracy, %")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    a_macs.set_xlabel("mean MACs per image, % of the unsplit model")
    a_ms.set_xlabel(f"time per image, % of the unsplit model (batch {min(rep['latency'], key=int)}, {rep['backend']})")
    a_macs.set_title("accuracy vs cost in MACs")
    a_ms.set_title("accuracy vs measured time")
    fig.tight_layout()
    fig.savefig(paths["accuracy_cost"])

    fig, (ax,) = _figure(7, 4.2)
    idx = np.arange(len(exits))
    w = 0.38

    def bars(offset, key, label, color):
        rows = [(i, e[key]) for i, e in enumerate(exits) if e[key] is not None]
        if key == "static_ms":  # truncated at the last exit: the unsplit model itself
            rows.append((len(exits) - 1, rep["profile"]["full_ms"]))
        if not rows:
            return
        xs = np.array([i for i, _ in rows]) + offset
        p50 = np.array([s["p50_ms"] for _, s in rows])
        err = np.array([[s["p50_ms"] - s["p10_ms"] for _, s in rows], [s["p90_ms"] - s["p50_ms"] for _, s in rows]])
        ax.bar(xs, p50, w, yerr=err, capsize=3, label=label, color=color)

    bars(-w / 2, "cumulative_ms", "to answer here (split network, earlier heads included)", "tab:blue")
    bars(w / 2, "static_ms", "network truncated here, alone (last: the unsplit model)", "tab:gray")
    full = rep["profile"]["full_ms"]
    ax.axhline(full["p50_ms"], color="black", linewidth=1, label="unsplit model (p10-p90 shaded)")
    ax.axhspan(full["p10_ms"], full["p90_ms"], color="black", alpha=0.1)
    ax.set_xticks(idx, [f"{e['index']}: {e['name']}" for e in exits], fontsize=8)
    ax.set_ylabel("ms per batch (p50, bars p10-p90)")
    ax.set_title(f"per-exit latency, {rep['profile_backend']}, batch {rep['profile']['batch_size']}"
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
        t.caption = escape(f"batch {pr['batch']}: shipped deployment predicted {_ms_cell(d['predicted_ms'])} ms, "
                           f"measured {_ms_cell(d['measured_ms'])} ms ({_err_cell(d['relative_error'])}){static}; "
                           f"unsplit model predicted {_ms_cell(pr['full']['predicted_ms'])} ms, measured "
                           f"{_ms_cell(pr['full']['measured_ms'])} ms")
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
    rep = report_data(bundle, ev, prof, cal, curves)
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
        if name not in ("eval.json", "profile.json", "curves.png"):
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
