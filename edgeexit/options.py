"""The command line's words as typed configs: a budget string, an exits list, the model / data / training options
`train` and `build` share (built once into `TrainOptions`), and the checks a build runs before its first epoch."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from edgeexit.errors import ConfigError

if TYPE_CHECKING:  # torch and the data sets load only when a command needs them
    from edgeexit.calibrate.budget import Budget
    from edgeexit.deploy import Objective
    from edgeexit.models import ModelConfig
    from edgeexit.models.user import PassedModel
    from edgeexit.pipeline import DataConfig
    from edgeexit.targets import Target
    from edgeexit.train.trainer import TrainConfig


@dataclass(frozen=True)
class TrainOptions:
    """What `edgeexit train` and `edgeexit build` both take: the data, the model and how to train it. `passed`: the
    user's own --model again, for the later stages that rebuild it from the checkpoint."""

    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    passed: PassedModel | None = None


def train_options(*, dataset: str, backbone: str, exits: str, head: str | None, image_size: int, method: str,
                  weight_mode: str, lam: float | None, gater_features: str, gater_period: int, device: str,
                  weights: str | None, model: str | None, model_kwargs: str | None, freeze_backbone: bool,
                  unfreeze_after: int | None, epochs: int, batch_size: int, lr: float, schedule: str, seed: int,
                  max_steps: int | None, limit_train: int | None, limit_val: int | None, limit_test: int | None,
                  patience: int = 12, amp: bool = True, freeze_bn: bool = False, sync_bn: bool = False,
                  distill: str | None = None, gradient_equilibrium: bool = False) -> TrainOptions:
    """The shared options as typed configs, every one checked (a typo must not cost a training run)."""
    from edgeexit.pipeline import DataConfig
    from edgeexit.train.distill import parse_distill
    from edgeexit.train.trainer import TrainConfig

    data = DataConfig(dataset, image_size, seed, None, limit_train, limit_val, limit_test)
    cfg = model_config(backbone, exits, head, image_size, weights, method, gater_features, model, model_kwargs)
    train = TrainConfig(method=method, weight_mode=weight_mode, epochs=epochs, batch_size=batch_size, lr=lr,
                        patience=patience, seed=seed, max_steps_per_epoch=max_steps, lam=lam, gater_period=gater_period,
                        device=device, amp=amp, freeze_bn=freeze_bn, sync_bn=sync_bn, schedule=schedule,
                        freeze_backbone=freeze_backbone, unfreeze_after=unfreeze_after,
                        distill=parse_distill(distill), gradient_equilibrium=gradient_equilibrium)
    return TrainOptions(data, cfg, train, passed_model(cfg.model, model_kwargs))


def budget(text: str):
    """'0.5' (fraction of full MACs), '12e6macs', '5ms@jetson', or a preset name from calibration/budgets."""
    from edgeexit.calibrate.budget import Budget, load_budget_preset

    low = text.strip().lower()
    try:
        if low.endswith("macs"):
            return Budget("macs", float(low[:-4]))
        if "ms" in low and low.split("@")[0].endswith("ms"):
            value, _, target = low.partition("@")
            return Budget("ms", float(value[:-2]), target or None)
        return Budget("macs_fraction", float(low))
    except ValueError:
        return load_budget_preset(text)


def exits_option(exits: str):
    """A placement name, comma-separated block indices, or comma-separated block names / module paths."""
    text = exits.strip()
    if not text:
        return "stages"
    if text in ("stages", "full", "blocks") or text.startswith("eenet:"):
        return text
    if not text[0].isdigit():
        return [name.strip() for name in text.split(",") if name.strip()]
    try:
        return [int(i) for i in text.split(",")]
    except ValueError:
        raise ConfigError("bad --exits", got=exits, expected="stages | full | blocks | eenet:<dist>:<n> | e.g. 2,5,8",
                          hint="block indices are listed by `edgeexit backbones`") from None


def passed_model(model: str | None, model_kwargs: str | None):
    """The --model (--model-kwargs) passed again to a stage that rebuilds a checkpoint's model."""
    from edgeexit.models.user import PassedModel

    if model is None and model_kwargs is None:
        return None
    cfg = model_config("", "stages", None, 32, None, "aep", "", model, model_kwargs)  # the same checks as train's
    return PassedModel(model, cfg.model_kwargs)


def model_config(backbone, exits, head, image_size, weights, method, gater_features, model=None, model_kwargs=None):
    """The model options; the head defaults to the method's (EENet's Pool block for eenet) and else to MSDNet's conv
    classifier (issue 19: on the default build it lifts the first exit from 88.2 to 90.7 % and the accuracy at 30 %
    of the MACs from 89.3 to 90.8 %, the full model from 91.24 to 91.60 %), but AEP's (your own classifier replicated)
    on a model of yours (--model): MSDNet's head has no fixed cost, and on a small model it can cost more than the
    model itself. The gater is added for the budget method only."""
    from edgeexit.models import ModelConfig

    kwargs = None
    if model_kwargs:
        try:
            kwargs = json.loads(model_kwargs)
        except json.JSONDecodeError as err:
            raise ConfigError("--model-kwargs is not valid JSON", got=model_kwargs, expected='e.g. {"num_classes": 10}',
                              hint="quote it for the shell: --model-kwargs '{\"num_classes\": 10}'") from err
        if not isinstance(kwargs, dict):
            raise ConfigError("--model-kwargs must be a JSON object", got=model_kwargs, expected='{"name": value, ...}')
        if model is None:
            raise ConfigError("--model-kwargs needs --model", got=model_kwargs, expected="--model package.module:function")
    return ModelConfig(backbone=model or backbone, exits=exits_option(exits),
                       head=head or ("pool" if method == "eenet" else "aep" if model else "conv"),
                       image_size=image_size,
                       weights=str(weights) if weights else None,
                       gater_features=gater_features if method == "budget" else None, model=model, model_kwargs=kwargs)


@dataclass(frozen=True)
class BuildChoices:
    """The build's calibration and export choices, checked: the target parsed once, here, for the whole build."""

    target: Target
    precision: str
    formats: list[str]
    budget: Budget | None  # None: the latency-first flow without a cost cap (--max-drop alone, the default)
    policy: str
    score: str
    # the latency-first flow (issue 18; the default, or --max-drop / --latency-first): what the deployment search
    # optimises and at which batch size; None: the MACs-first flow (prune, calibrate for the budget)
    objective: Objective | None = None
    batch: int | None = None
    default: bool = False  # the objective is the build's own default (DEFAULT_MAX_DROP), not the user's
    note: str | None = None  # why this build decides on MACs although no budget was given (said once)


DEFAULT_MAX_DROP = 0.5  # the build's objective when none is given: the fastest deployment within 0.5 pt, on the device
DEFAULT_BUDGET = "0.6"  # the MACs-first build's budget where the deployment search cannot decide


def build_choices(target: str, precision: str | None, budget_text: str | None, policy: str | None, score: str | None,
                  method: str, eval_batch_size: int, *, max_drop: float | None = None, latency_first: bool = False,
                  batch: int | None = None, prune: bool = True) -> BuildChoices:
    """Every build option known to be usable, or the error (before the first epoch). Given no budget and no
    objective, the build decides on the device with --max-drop DEFAULT_MAX_DROP where the deployment search can
    (`search_blocker`), and on the MACs budget DEFAULT_BUDGET elsewhere, saying why (`note`)."""
    if (latency_first or max_drop is not None) and not prune:
        raise ConfigError("--no-prune keeps every exit; the deployment search chooses which to keep",
                          got="--no-prune with --max-drop / --latency-first", expected="one of them")
    if latency_first or max_drop is not None:
        base = _macs_choices(target, precision, DEFAULT_BUDGET, policy, score, method, eval_batch_size)
        return _latency_choices(base, budget_text, method, max_drop, batch)
    if budget_text is None:
        base = _macs_choices(target, precision, DEFAULT_BUDGET, policy, score, method, eval_batch_size)
        why = search_blocker(method, base, prune)
        if why is None:
            return replace(_latency_choices(base, None, method, DEFAULT_MAX_DROP, batch), default=True)
        if batch is not None:
            raise ConfigError("--batch is the operating batch size of the deployment search, which cannot decide "
                              "this build", got=f"--batch {batch}", expected="no --batch", hint=why)
        return on_macs(base, why)
    if batch is not None:
        raise ConfigError("--batch is the operating batch size of the deployment search", got=f"--batch {batch}",
                          expected="--max-drop PT or --latency-first with it (or no --budget: the default build)",
                          hint="the MACs-first build does not search at a batch size; drop --batch")
    return _macs_choices(target, precision, budget_text, policy, score, method, eval_batch_size)


def search_blocker(method: str, base: BuildChoices, prune: bool) -> str | None:
    """Why the deployment search cannot decide a build with these choices (None: it can)."""
    from edgeexit.calibrate import LOGIT_KINDS

    if method != "aep":
        return (f"the deployment search chooses among AEP exits scored from their logits; --method {method} "
                "sets its thresholds with its own policy")
    if base.policy != "search" or base.score not in LOGIT_KINDS:
        return f"--policy {base.policy} --score {base.score} set the thresholds; the deployment search sets its own"
    if base.precision != "fp32":
        return (f"{base.precision} (the precision of target {base.target.name}) moves the exit scores after the "
                "search chose thresholds on them; build --precision fp32 to decide on the device")
    if not prune:
        return "--no-prune keeps every exit; the deployment search chooses which to keep"
    return None


def on_macs(choices: BuildChoices, why: str) -> BuildChoices:
    """The default build on the MACs budget DEFAULT_BUDGET instead of the device, with the line that says why."""
    return replace(choices, budget=budget(DEFAULT_BUDGET), objective=None, batch=None, default=False,
                   note=f"deciding on MACs (budget {DEFAULT_BUDGET} of the unsplit model's), not on the device: {why}")


def device_blocker(choices: BuildChoices, profile_device: str) -> str | None:
    """Why a default build cannot profile its target where it would (None: it can). A local profile needs the
    target's own runtime here: a decision timed on the CPU emulation would be a decision for another device."""
    from edgeexit.runtime.registry import family_of, for_family

    if profile_device != "local":
        return None
    tgt = choices.target
    own = for_family(family_of(tgt.formats), tgt.delegate)
    if own is None or own.format == "engine":  # engines are built on the device, never at export
        return (f"target {tgt.name} runs where this machine cannot time it; profile on it with "
                "--profile-device ssh://... | adb://..., or name a --max-drop to decide on the CPU emulation")
    ok, why, install = own.available()
    if not ok:
        return f"target {tgt.name}'s runtime {own.name} is not here ({why}; {install})"
    return None


def _macs_choices(target, precision, budget_text, policy, score, method, eval_batch_size) -> BuildChoices:
    """The MACs-first build's choices (a budget as a MAC fraction, MACs, a preset or N ms@cpu)."""
    from edgeexit.calibrate import POLICIES, SCORE_KINDS
    from edgeexit.pipeline import exportable, policy_score
    from edgeexit.targets import load_target
    from edgeexit.train.distributed import launched_by_torchrun

    if launched_by_torchrun():
        raise ConfigError("build does not run under torchrun", got="RANK/WORLD_SIZE set", expected="one process",
                          hint="train with torchrun (-m edgeexit train), then run `edgeexit calibrate` and "
                          "`edgeexit export` once")
    tgt = load_target(target)
    _, precision, formats = exportable(tgt, precision)
    b = budget(budget_text)
    policy = policy or {"eenet": "fixed", "budget": "gater"}.get(method, "search")
    if policy not in POLICIES:
        raise ConfigError("unknown calibration policy", got=policy, expected=" | ".join(POLICIES))
    if score is not None and score not in SCORE_KINDS:
        raise ConfigError("unknown exit score", got=score, expected=" | ".join(SCORE_KINDS))
    score = policy_score(policy, score, default={"eenet": "confidence", "budget": "gater"}.get(method, "max_softmax"))
    if score == "confidence" and method == "aep":
        raise ConfigError("the confidence score needs EENet exit blocks", got="--method aep",
                          expected="--method eenet", hint="score AEP exits by max_softmax, margin or neg_entropy")
    if score == "gater" and method != "budget":
        raise ConfigError("the gater score needs a gater", got=f"--method {method}", expected="--method budget")
    if b.kind == "ms" and b.target not in (None, "cpu"):
        raise ConfigError("build measures latency on this host", got=budget_text, expected="a MACs budget, or N ms@cpu",
                          hint=f"for {b.target}, profile on the device and calibrate there with `edgeexit calibrate`")
    if eval_batch_size < 1:
        raise ConfigError("--eval-batch-size must be >= 1", got=eval_batch_size)
    return BuildChoices(tgt, precision, formats, b, policy, score)


def _latency_choices(base: BuildChoices, budget_text: str | None, method: str, max_drop: float | None,
                     batch: int | None) -> BuildChoices:
    """The latency-first build's choices: the aep method (its exits scored from logits), fp32 (int8 would move the
    scores the search chose thresholds on), an objective of --max-drop and/or a millisecond --budget on this target,
    and the operating batch size within the target's batch range (default 1)."""
    from edgeexit.calibrate import LOGIT_KINDS
    from edgeexit.deploy import make_objective

    tgt = base.target
    if method != "aep":
        raise ConfigError("the deployment search chooses among AEP exits scored from their logits",
                          got=f"--method {method}", expected="--method aep with --max-drop / --latency-first",
                          hint="build other methods without --max-drop (their own policies choose the thresholds)")
    if base.policy != "search" or base.score not in LOGIT_KINDS:
        raise ConfigError("the deployment search sets the thresholds itself", got=f"--policy {base.policy} --score "
                          f"{base.score}", expected=f"no --policy (or search), --score {' | '.join(LOGIT_KINDS)}")
    if base.precision != "fp32":
        raise ConfigError("the deployment search needs fp32", got=f"--precision {base.precision}", expected="fp32",
                          hint="int8 moves the exit scores after the search chose thresholds on them; build fp32")
    b = None
    if budget_text is not None:
        b = budget(budget_text)
        if b.kind != "ms":
            raise ConfigError("the deployment search takes a latency budget", got=f"--budget {budget_text}",
                              expected="N ms or N ms@" + tgt.name,
                              hint="MAC budgets: build without --max-drop / --latency-first")
        if b.target not in (None, tgt.name):
            raise ConfigError("the latency budget names another target than the build's", got=budget_text,
                              expected=f"N ms@{tgt.name}", hint=f"build with --target {b.target}")
    objective = make_objective(max_drop=max_drop, latency_ms=None if b is None else b.value)
    lo, hi = tgt.batch
    if batch is not None and not lo <= batch <= hi:
        raise ConfigError("the operating batch size is outside the target's batch range", got=f"--batch {batch}",
                          expected=f"{lo}..{hi} (target {tgt.name})")
    return BuildChoices(tgt, base.precision, base.formats, b, base.policy, base.score, objective,
                        batch if batch is not None else lo)


def batch_list(text: str | None) -> list[int] | None:
    """--batches: comma-separated batch sizes >= 1."""
    if not text:
        return None
    try:
        sizes = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ConfigError("--batches takes integers", got=text, expected="e.g. 1,8") from None
    if not sizes or min(sizes) < 1:
        raise ConfigError("--batches takes batch sizes >= 1", got=text, expected="e.g. 1,8")
    return sizes


def check_resume(resume: bool, adopt: bool) -> None:
    """`--adopt` only means something for a resumed run."""
    if adopt and not resume:
        raise ConfigError("--adopt needs --resume", got="--adopt", expected="--resume --adopt",
                          hint="--adopt says which settings a resumed run follows; a new run takes the options given")


def check_tolerance(tolerance: float | None) -> None:
    """compare's --tolerance: None (by precision) or a finite number >= 0 (typer checks the sign)."""
    import math

    if tolerance is not None and not math.isfinite(tolerance):
        raise ConfigError("--tolerance must be a finite number >= 0", got=tolerance, expected="e.g. 1e-4")
