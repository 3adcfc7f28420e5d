"""What the terminal shows: rich tables and one-line summaries of each stage's result. Every string that may come
from a file or a device is escaped, so rich never reads it as markup. (The report's own tables: edgeexit/report.py.)"""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table


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


def calibration_table(cal) -> Table:
    t = Table(title=f"calibration ({cal.policy}, {cal.score_kind}, {cal.n_samples} samples)")
    for col in ("exit", "threshold", "fraction exiting", "accuracy alone", f"cost ({cal.cost_unit})"):
        t.add_column(col, justify="right")
    for k, (th, fr, acc, c) in enumerate(zip(cal.thresholds, cal.exit_fractions, cal.exit_accuracy, cal.costs)):
        t.add_row(str(k), f"{th:.4f}", f"{fr:.3f}", f"{acc:.4f}", f"{c:,.3f}" if cal.cost_unit == "ms" else f"{c:,.0f}")
    return t


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


def cost_summary(cal) -> str:
    """Mean cost against the original unsplit model (a pruned network's last exit is not the yardstick)."""
    if cal.cost_unit == "ms":
        return f"{cal.mean_cost:.3f} ms per image ({cal.cost_fraction:.3f}x the unsplit model's time)"
    return f"{cal.cost_fraction:.3f}x the original model's MACs"


def noise_note(prof: dict) -> str:
    worst = max(n["noise"] for n in prof["noise"].values())
    if prof["trusted"]:
        return (f"noise of this profile (the unsplit model timed twice): {100 * worst:.1f} % "
                f"(bound {100 * next(iter(prof['noise'].values()))['bound']:.0f} %)")
    return (f"[yellow]this profile is noisy: the unsplit model timed twice differs by {100 * worst:.1f} %; "
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


def compare_lines(res) -> list:
    """The comparison table, then one line per backend's decisions and per BundledProgram test case."""
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
    lines: list = [t]
    for name, a in res.agreement.items():
        lines.append(f"exit decisions of {name} equal to {first}'s: {100 * a:.2f} % "
                     f"(need >= {100 * res.min_agreement:.1f} %)")
    for method, failure in res.bundled.items():
        lines.append(f"BundledProgram test case of {method}: "
                     + ("passed" if failure is None else f"[red]failed[/] ({escape(failure)})"))
    lines.append("[bold green]PASS[/]" if res.passed else "[bold red]FAIL[/]")
    return lines


def targets_table(rows: list[dict]) -> Table:
    t = Table(title="targets")
    for col in rows[0]:
        t.add_column(col)
    for r in rows:
        t.add_row(*[escape(", ".join(v)) if isinstance(v, (list, tuple))
                    else ("✅" if v is True else "❌" if v is False else escape(str(v))) for v in r.values()])
    return t


def backbones_table() -> Table:
    """The backbones edgeexit has adapters for, and the vision transformers, with their exits, MACs and parameters at
    each one's default input size: read from a table measured once (edgeexit.models.catalog), no model is built."""
    from edgeexit.models.catalog import catalog

    def si(n: int) -> str:
        return next(f"{n / 10 ** e:.3g} {p}" for e, p in ((9, "G"), (6, "M"), (3, "k"), (0, "")) if n >= 10 ** e or not e)

    def names(blocks: list[str]) -> str:  # a ViT's encoder blocks: encoder.layers.encoder_layer_2 -> encoder_layer_2
        return ", ".join(b.rsplit(".", 1)[-1] if b.startswith("encoder.layers.") else b for b in blocks)

    t = Table(title="backbones: the unsplit model's MACs and parameters for the input shown (1000 classes at 224 px, "
                    "10 at 32 px; MACs grow with the image area); --exits stages puts exits after the blocks listed, "
                    "--exits full after as many blocks as shown")
    t.add_column("name", no_wrap=True)
    for col in ("input", "MACs", "params", "blocks", "full"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("exits after (stages)", overflow="fold")
    for row in catalog():
        t.add_row(row.name, f"{row.channels}×{row.image_size}²", si(row.macs), si(row.params), str(row.blocks),
                  str(len(row.full)), names(row.stages))
    return t


def engines_hint(bundle, path) -> str | None:
    """The command that builds a TensorRT bundle's engines on its device; None when it needs none."""
    from edgeexit.engines import engines_to_build

    command = engines_to_build(bundle, path)
    if not command:
        return None
    return (f"[bold]on the {escape(bundle.manifest.target)} itself:[/] {escape(command)}  (verifies the bundle, "
            "builds its TensorRT engines into a new version of it, then profiles them there)")


def export_lines(bundle, path) -> list[str]:
    """What `edgeexit export` says: the bundle written, both bundles' sizes, and how to build engines on the device
    when the target needs that (rich markup)."""
    from edgeexit.bundle.slim import sizes_line

    m = bundle.manifest
    lines = [f"bundle: {escape(str(path))} -> {escape(bundle.root.name)} ({len(bundle.exits)} segments, target "
             f"{escape(m.target)}, {m.format} {m.precision}, formats {', '.join(m.formats)})",
             escape(sizes_line(bundle, path))]
    hint = engines_hint(bundle, path)  # a target that builds its engines on the device says how
    return lines + ([hint] if hint else [])


def costmodel_note(model) -> str:
    """The cost model's stated error beside the noise of the profile it was fitted on."""
    b = model.batches[0]
    note = (f"cost model ({escape(model.backend)} on {escape(model.device)}, batches {model.batch_sizes}): leave-one-out "
            f"error {100 * model.error():.1f} %, profile noise {100 * model.noise():.1f} %; at batch {b.batch} a "
            f"segment boundary adds {1e3 * b.boundary_ms:.1f} us, the exit loop {1e3 * b.loop_ms:.1f} us per call, a "
            f"plain call {1e3 * b.call_ms:.1f} us, leaving through an exit test {1e3 * b.answer_ms:.1f} us")
    return note if model.trusted else f"[yellow]{note}: a noisy profile, profile again on an idle device[/]"


def deployment_table(res, exit_names: list[str], static, backend: str, full_ms: float | None = None) -> Table:
    """What the deployment search chose, next to the best static truncation and the unsplit model (`full_ms`: its
    time as one plain call, when the search costed it otherwise)."""
    full = res.full if full_ms is None else res.full.model_copy(update={"cost": float(full_ms)})
    unit = "ms" if res.unit == "ms" else "x MACs"
    where = f", batch {res.batch}" if res.batch is not None else ""
    t = Table(title=escape(f"deployment search: {res.objective.describe()} ({res.subsets} exit subsets, "
                           f"{res.n_samples} val samples, {res.seconds:.2f} s; predicted on {backend}{where})"))
    for col in ("", "exits", f"predicted {unit}", "val accuracy", "vs unsplit"):
        t.add_column(col, justify="right")

    def row(label: str, d) -> None:
        if d is None:
            t.add_row(label, "none qualifies", "-", "-", "-")
            return
        names = ", ".join(f"{k}:{exit_names[k]}" for k in d.exits)
        t.add_row(label, escape(names), f"{d.cost:.4g}", f"{100 * d.accuracy:.2f} %",
                  f"{100 * (d.accuracy - full.accuracy):+.2f} pt, {d.cost / full.cost:.3f}x")

    row(f"[bold]chosen ({res.chosen.kind.replace('_', ' ')})[/]", res.chosen)
    row("best static", static)
    row("unsplit model", full)
    return t


def predict_table(res: dict, bundle) -> Table:
    """`edgeexit predict`: one row per image; file names fold rather than shrink to an ellipsis in a narrow terminal."""
    table = Table(title=f"{escape(str(bundle))} on {escape(res['backend'])} ({res['num_exits']} exits)")
    table.add_column("file", overflow="fold")
    for column in ("class", "exit"):
        table.add_column(column, overflow="fold")
    for column in ("score", "ms"):
        table.add_column(column, justify="right")
    for r in res["predictions"]:
        table.add_row(escape(r["file"]), escape(r["class"]), f"{r['exit']} ({escape(r['exit_name'])})",
                      f"{r['score']:.3f}", f"{r['ms']:.2f}")
    return table


def build_lines(res, choices, run, run_dir, profile_device: str, *, title: str) -> list:
    """What `edgeexit build` prints at the end: the summary and report tables, the verdict, what to run on the device
    (engines first where the target needs them, else the on-device profile) and where the bundle is."""
    from edgeexit.recipe import on_device_hint
    from edgeexit.report import report_table, summary_table

    lines = [summary_table(res.evaluation, title=title), report_table(res.report),
             escape(res.report["static_baseline"]["verdict"])]
    engines = engines_hint(res.bundle, run.bundle)  # `edgeexit engines` builds them, then profiles on the device
    device = on_device_hint(choices, run_dir, res.backend)
    if engines:
        lines.append(engines)
    elif profile_device == "local" and device:
        lines.append(device)
    lines.append(f"bundle: {run.bundle} -> {res.bundle.root.name}  (report/ inside; {run.report_md})  "
                 f"total {res.seconds:.0f} s")
    from edgeexit.bundle.slim import sizes_line

    lines.append(escape(sizes_line(res.bundle, run.bundle)))  # what ships, beside what is checked
    return lines
