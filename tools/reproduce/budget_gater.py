"""The budget-aware gater (papers/003) in miniature: a network trained with the gater (`--method budget`, λ = 2,
gater on confidence + entropy) against the same network trained the classic way (every exit's cross-entropy weighted
alike, i.e. Pr(k|x) = 1/K, `--method aep --weight-mode unif`), both answering with fixed-fraction thresholds at
equal budgets: at each MAC budget a geometric share of the validation samples leaves at each exit (MSDNet's rule,
the one the paper uses; `edgeexit.calibrate.policies.calibrate_fractions`), the thresholds are then applied to
the test split. The budget-trained network is also shown with the thresholds on the gater's own P_k, and with the
gater's fixed rule P_k >= 0.5 (one operating point, at the cost it picks).

Same backbone (CIFAR-style ResNet-20, exits after blocks 1, 3, 5, 7 and the final classifier: 5 exits at 12, 35, 56, 77
and 100 % of the MACs), data, epochs and seed for both; `edgeexit.pipeline.train_stage` trains them.

Reduced against the paper: Fashion-MNIST at 32 px with ResNet-20 (the paper: MSDNet / RANet on CIFAR-10/100 and
ImageNet, 7 exits), 10,000 training images, 3 epochs (the paper: 300 epochs of SGD on CIFAR). About 4 min on 2 idle
cores (2 trainings, ~90 s each, and 3 x 5 calibrations).

    python tools/reproduce/budget_gater.py --out runs/reproduce_budget_gater

Writes OUT/budget_gater.json and OUT/budget_gater.md. `--quick`: a tiny CNN on synthetic data, seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_scale, apply_quick, load_outputs, md_table, operating_point, print_table, scale_text,  # noqa: E402
                    train_run, write)

from edgeexit.calibrate.policies import calibrate_gater  # noqa: E402
from edgeexit.models import ModelConfig  # noqa: E402
from edgeexit.pipeline import gater_scores  # noqa: E402

# The paper's figures, quoted exactly (papers/003). It has no table of budget-trained vs classic training at equal
# budgets (that is its Fig. 3, a plot); its text and Table 1 give these.
PAPER = {
    "source": "papers/003 (budget-aware early exiting)",
    "table1_cifar100_budgeted_top1": {  # "Accuracy on CIFAR-100 in budgeted batch classification" (MSDNet + gater)
        "budgets_flops": ["30M", "50M", "70M", "90M"],
        "Confidence Only": [70.84, 76.39, 79.32, 80.08],
        "Confidence and Entropy": [72.28, 76.81, 79.53, 80.41],
    },
    "text_cifar10": "For CIFAR-10, our method achieves a classification rate of 95.03% with a budget of only 25M "
                    "FLOPs, which is significantly more efficient than MSDNet, requiring twice as many FLOPs to "
                    "achieve the same level of performance.",
    "text_frozen": "This figure compares the performance of our proposed method (called \"MSDNet+Ours\") with the "
                   "same method when the classification network is first learned and then frozen (called \"MSDNet "
                   "frozen+Ours\"). We observe that the gain is significant, on the order of +2% on CIFAR 100, across "
                   "various budget levels.",
    "text_msdnet": "Compared to the traditional training of MSDNet, our proposed method achieves an improvement of "
                   "approximately 1% to 1.5% in accuracy, depending on the exit.",
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backbone", default="cifar_resnet20")
    p.add_argument("--exits", default="1,3,5,7", help="block indices after which exits go (the final one is added), "
                                                       "or a placement name")
    p.add_argument("--lam", type=float, default=2.0, help="λ of the budget-aware loss (the paper: 2)")
    p.add_argument("--budgets", default="0.3,0.4,0.5,0.6,0.7", help="MAC fractions of the unsplit model")
    add_scale(p)
    args = apply_quick(p.parse_args(argv), backbone="tiny_cnn", exits="0,1", budgets="0.5,0.7")
    budgets = [float(v) for v in args.budgets.split(",")]
    exits = [int(v) for v in args.exits.split(",")] if args.exits[0].isdigit() else args.exits
    model = ModelConfig(backbone=args.backbone, exits=exits, head="aep")
    t0 = time.time()
    classic = load_outputs(train_run(args, "classic", model, method="aep", weight_mode="unif").checkpoint)
    gated = load_outputs(train_run(args, "budget", model, method="budget", lam=args.lam).checkpoint)
    val_p, test_p = gater_scores(gated.net, gated.val.logits), gater_scores(gated.net, gated.test.logits)
    cheapest = max(t.costs.cumulative_macs[0] / t.reference for t in (classic, gated))
    rows = []
    for f in budgets:
        if f < cheapest:
            rows.append({"budget": f, "unreachable": True})
            continue
        rows.append({"budget": f,
                     "classic_fractions": operating_point(classic, f, policy="fractions"),
                     "budget_fractions": operating_point(gated, f, policy="fractions"),
                     "budget_fractions_gater_score": operating_point(gated, f, policy="fractions", kind="gater",
                                                                     val_scores=val_p, test_scores=test_p)})
    rule = calibrate_gater(gated.test.logits, gated.test.labels, gated.costs.cumulative_macs,
                           reference_cost=gated.reference, confidences=test_p)
    report = {"scale": scale_text(args), "backbone": args.backbone, "exits": list(gated.net.exit_names),
              "exit_macs_fraction": [float(v) for v in gated.costs.macs_fraction], "lam": args.lam,
              "test_exit_accuracy": {"classic": classic.test.exit_accuracy, "budget": gated.test.exit_accuracy},
              "points": rows,
              "gater_rule": {"test_accuracy": float(rule.accuracy), "test_cost_fraction": float(rule.cost_fraction),
                             "exit_fractions": [float(v) for v in rule.exit_fractions]},
              "paper": PAPER, "seconds": time.time() - t0}
    print_and_write(report, args.out)
    return report


def print_and_write(report: dict, out: Path) -> None:
    header = ["MAC budget", "classic training + fixed fractions", "budget-aware training + fixed fractions",
              "Δ (pt)", "budget-aware + fractions on the gater's P_k"]

    def cell(pt: dict) -> str:
        return f"{100 * pt['test_accuracy']:.2f} ({100 * pt['test_cost_fraction']:.0f} %)"

    rows = []
    for r in report["points"]:
        if r.get("unreachable"):
            rows.append([f"{r['budget']:.0%}", "below exit 1's cost", "", "", ""])
            continue
        c, b = r["classic_fractions"], r["budget_fractions"]
        rows.append([f"{r['budget']:.0%}", cell(c), cell(b), f"{100 * (b['test_accuracy'] - c['test_accuracy']):+.2f}",
                     cell(r["budget_fractions_gater_score"])])
    g = report["gater_rule"]
    gate = f"gater rule P_k >= 0.5: {100 * g['test_accuracy']:.2f} % at {100 * g['test_cost_fraction']:.0f} % of the MACs"
    per_exit = (f"test accuracy per exit ({', '.join(report['exits'])}): classic "
                + " ".join(f"{100 * a:.1f}" for a in report["test_exit_accuracy"]["classic"]) + "; budget-aware "
                + " ".join(f"{100 * a:.1f}" for a in report["test_exit_accuracy"]["budget"]))
    print_table("Budget-aware gater vs classic training at equal budgets: test accuracy % (test MACs %)", header, rows,
                caption=report["scale"], width=180)
    print(gate)
    print(per_exit)
    t1 = PAPER["table1_cifar100_budgeted_top1"]
    paper = md_table(["input of the gater", *t1["budgets_flops"]],
                     [[k, *[f"{v:.2f}" for v in t1[k]]] for k in ("Confidence Only", "Confidence and Entropy")])
    text = (f"# Budget-aware gater (papers/003) in miniature (`tools/reproduce/budget_gater.py`)\n\nScale: "
            f"{report['scale']}; backbone {report['backbone']}, exits {', '.join(report['exits'])} at "
            + ", ".join(f"{100 * v:.0f}" for v in report["exit_macs_fraction"]) + f" % of the MACs, λ = {report['lam']:g}."
            "\nThresholds calibrated on validation with fixed fractions (MSDNet's geometric shares), measured on test; "
            "in brackets the MACs they cost on test.\n\n" + md_table(header, rows) + f"\n\n{gate}.\n{per_exit}.\n\n"
            "The paper (CIFAR / MSDNet; the effect: budget-aware training is more accurate at equal budgets):\n\n"
            f"> {PAPER['text_msdnet']}\n\n> {PAPER['text_cifar10']}\n\n> {PAPER['text_frozen']}\n\n"
            "Table 1 (CIFAR-100, budgeted batch classification, top-1 %):\n\n" + paper)
    write(out, "budget_gater", report, text)


if __name__ == "__main__":
    main()
