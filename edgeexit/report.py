"""What people read: the terminal table and the markdown report of a build or an evaluation."""

from __future__ import annotations

from rich.table import Table


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def summary_table(result: dict, title: str = "early exit vs full model") -> Table:
    t = Table(title=title)
    t.add_column("metric")
    t.add_column("full model", justify="right")
    t.add_column("early exit", justify="right")
    t.add_row(f"{result['split']} accuracy ({result['samples']} samples)", _pct(result["full_accuracy"]),
              _pct(result["early_exit_accuracy"]))
    t.add_row("mean MACs (fraction of full)", "1.000", f"{result['macs_fraction']:.3f}")
    for batch, ratio in result["latency_fraction_by_batch"].items():
        t.add_row(f"measured time on {result['backend']}, batch {batch} (fraction of full)", "1.000", f"{ratio:.3f}")
    t.add_row("exit histogram", "", " / ".join(str(h) for h in result["exit_histogram"]))
    return t


def markdown_report(result: dict, calibration: dict | None = None, profile: dict | None = None) -> str:
    lines = [
        "# edgeexit report", "",
        f"Bundle: `{result['bundle']}`, evaluated on the {result['split']} split ({result['samples']} samples, "
        f"batch {result['batch_size']}, backend {result['backend']}; the full model on the same backend).", "",
        "| metric | full model | early exit |", "|---|---:|---:|",
        f"| accuracy | {_pct(result['full_accuracy'])} | {_pct(result['early_exit_accuracy'])} |",
        f"| mean MACs per image | {result['full_macs']:,} | {result['mean_macs']:,.0f} ({result['macs_fraction']:.3f}×) |",
        *[f"| measured time, batch {b} (ratio, same run, interleaved) | 1.000 | {r:.3f}× |"
          for b, r in result["latency_fraction_by_batch"].items()], "",
        "## Exits", "", "| exit | after | samples answered |", "|---:|---|---:|",
    ]
    for i, (name, n) in enumerate(zip(result["exit_names"], result["exit_histogram"])):
        lines.append(f"| {i} | {name} | {n} |")
    if profile:
        lines += ["", f"## Per-exit latency ({profile['backend']}, batch {profile['batch_size']}, p50 of {profile['rounds']} rounds)", "",
                  "| exit | after | p50 ms | p90 ms | time / full | MACs / full |", "|---:|---|---:|---:|---:|---:|"]
        for e in profile["exits"]:
            lines.append(f"| {e['index']} | {e['name']} | {e['p50_ms']:.3f} | {e['p90_ms']:.3f} | {e['time_fraction']:.3f} | "
                         f"{e['macs_fraction']:.3f} |")
        lines.append(f"| full | unsplit model | {profile['full']['p50_ms']:.3f} | {profile['full']['p90_ms']:.3f} | 1.000 | 1.000 |")
    if calibration:
        lines += ["", "## Calibration", "",
                  f"Policy `{calibration['policy']}` on score `{calibration['score_kind']}`; expected accuracy "
                  f"{_pct(calibration['accuracy'])} at {calibration['cost_fraction']:.3f}× the full cost on the calibration set.", "",
                  "![accuracy vs cost](curves.png)"]
    lines += ["", "Times are ratios of the two runtimes measured alternately on the same batches in one process; "
              "absolute times on this machine are too noisy to report alone.", ""]
    return "\n".join(lines)
