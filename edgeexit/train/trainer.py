"""Train an early-exit network with one of the three papers' methods: Adam, early stopping on the validation loss,
atomic checkpoints that resume exactly, rich progress with per-exit loss and accuracy, mixed precision on CUDA and
data-parallel training under torchrun (`edgeexit.train.distributed`).

    aep     L = Σ_i α_i·CE_i, α by DESC/ASC/MIX/UNIF                      (papers/000, Eq. 1-2; losses.aep_loss)
    eenet   L_v2 = Σ_i CE(y, Ŷ_i) + λ·C_i with the soft recursion          (papers/002, Eq. 6-9; losses.eenet_loss)
    budget  bi-level: the network on (A+1)(CE + λ·Cost), the gater on A(CE + λ·Cost) every `gater_period` steps
                                                                            (papers/003, Eq. 10-12; gater.inner_loss/outer_loss)

Costs are cost rates: cumulative MACs of answering at exit k (edgeexit.models.costs) / MACs of the unsplit model.

`freeze_backbone` trains the early-exit heads only (and the gater): the segments and the final classifier keep
their parameters and, in eval mode, their BatchNorm statistics and dropout off, so the final exit keeps answering
exactly as the user's trained model did. Every method works on a frozen backbone: AEP trains each head on its own
term of Σα_i·CE_i (linear probes; the final term is a constant); EENet trains the heads' classifier and confidence
branches, and the cost term of L_v2 still reaches the confidences h_i through the soft recursion, so they learn
when the fixed final answer is worth its cost; the budget method trains the heads on (A+1)(CE+λ·Cost), which
reaches them through their CE and through A (the gater reads their logits), and the gater as usual.
`unfreeze_after` N makes it two-stage: heads only for N epochs, then everything jointly (the final exit moves).

`distill` (T, α) replaces each early exit's classification term in any method by (1 − α)·CE + α·T²·KL from the
final exit's detached, softened answers (IMTA / Phuong & Lampert); the budget gater's own objective keeps the plain
CE. `gradient_equilibrium` runs the network through `distill.equilibrium_forward` (IMTA's gradient rescaling).
Both leave a frozen backbone frozen: the teacher is the user's final exit, and it never changes.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from torch import Tensor, nn
from torch.utils.data import Dataset

from edgeexit.aep import AEP_MODES
from edgeexit.data.batches import batches
from edgeexit.data.spec import InputSpec
from edgeexit.errors import CheckpointError, ConfigError, DatasetError
from edgeexit.models import EarlyExitNet, ModelConfig
from edgeexit.models.costs import count_costs
from edgeexit.train import distributed
from edgeexit.train.checkpoint import load_checkpoint, save_checkpoint
from edgeexit.train.distributed import DistContext
from edgeexit.train.distill import check_distill, equilibrium_forward
from edgeexit.train.gater import inner_loss, outer_loss
from edgeexit.train.losses import aep_loss, eenet_loss, exit_cross_entropy

METHODS = ("aep", "eenet", "budget")
WEIGHT_MODES = AEP_MODES
SCHEDULES = ("constant", "cosine")
# λ of each cost-aware method: 1 in EENets' main experiments and code (papers/002, Sec. 4.2), 2 in papers/003.
DEFAULT_LAMBDA = {"eenet": 1.0, "budget": 2.0}


@dataclass
class TrainConfig:
    """Defaults are the AEP paper's settings (Adam 1e-4, batch 64, patience 12 on the validation loss), with the
    budget-aware gater's own settings from papers/003, Supplementary B."""

    method: str = "aep"
    weight_mode: str = "unif"  # AEP's α (and β) weights
    epochs: int = 100
    batch_size: int = 64  # the global batch, split over the ranks under torchrun
    lr: float = 1e-4
    patience: int = 12
    seed: int = 0
    max_steps_per_epoch: int | None = None  # cap for quick runs
    schedule: str = "constant"  # network learning rate: "constant" (the AEP paper) or "cosine" (short runs)
    lam: float | None = None  # cost weight λ; None: DEFAULT_LAMBDA of the method (unused by aep)
    temperature: float = 0.5  # T of the gater's sharpened exit weights A (papers/003, Eq. 9)
    gater_period: int = 10  # network steps per gater step: "intervals of 10" on CIFAR, 100 on ImageNet (Suppl. B)
    gater_lr: float = 1e-3  # the gater's Adam, cosine-annealed to gater_min_lr over the run (Suppl. B)
    gater_min_lr: float = 1e-5
    device: str = "auto"  # auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)
    amp: bool = True  # mixed precision (float16 autocast + GradScaler) when training on CUDA; ignored on CPU
    freeze_bn: bool = False  # BatchNorm in eval mode: fixed statistics (fine-tuning with small per-device batches)
    sync_bn: bool = False  # SyncBatchNorm across the ranks (CUDA only)
    freeze_backbone: bool = False  # train the exit heads only; segments and the final classifier fixed (BN in eval)
    unfreeze_after: int | None = None  # with freeze_backbone: train everything jointly from this epoch on
    # self-distillation of the early exits from the final exit, (T, α); None: off (default until measured)
    distill: tuple[float, float] | None = None
    gradient_equilibrium: bool = False  # IMTA's gradient rescaling at the segment boundaries (off until measured)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError("unknown training method", got=self.method, expected=", ".join(METHODS))
        if self.weight_mode not in WEIGHT_MODES:
            raise ConfigError("unknown AEP weight mode", got=self.weight_mode, expected=", ".join(WEIGHT_MODES))
        for name in ("epochs", "batch_size", "patience", "gater_period"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be an integer >= 1", got=getattr(self, name), expected=">= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise ConfigError("seed must be an integer in [0, 2^32)", got=self.seed, expected="e.g. 0",
                              hint="numpy, which shuffles and splits the data, takes seeds below 2^32")
        steps = self.max_steps_per_epoch
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            # 0 used to mean "no cap" silently; a cap of no steps trains nothing
            raise ConfigError("max steps per epoch must be an integer >= 1, or no cap", got=steps,
                              expected="--max-steps N with N >= 1, or no --max-steps")
        for name in ("lr", "gater_lr", "gater_min_lr", "temperature"):
            if not (isinstance(getattr(self, name), (int, float)) and 0 < getattr(self, name) < math.inf):
                raise ConfigError(f"{name} must be a finite number > 0", got=getattr(self, name), expected="> 0")
        if self.schedule not in SCHEDULES:
            raise ConfigError("unknown learning-rate schedule", got=self.schedule, expected=" | ".join(SCHEDULES),
                              hint="cosine anneals the learning rate to 0 over the run; constant keeps it")
        if self.lam is None:
            self.lam = DEFAULT_LAMBDA.get(self.method)
        if self.lam is not None and not (isinstance(self.lam, (int, float)) and 0 <= self.lam < math.inf):
            raise ConfigError("the cost weight λ must be finite and >= 0", got=self.lam,
                              expected="λ >= 0 (EENets use 1, the budget-aware gater 2)")
        if self.unfreeze_after is not None and (not self.freeze_backbone or isinstance(self.unfreeze_after, bool)
                                                or not isinstance(self.unfreeze_after, int) or self.unfreeze_after < 1):
            raise ConfigError("--unfreeze-after needs --freeze-backbone and a number of epochs >= 1",
                              got=f"freeze_backbone={self.freeze_backbone}, unfreeze_after={self.unfreeze_after}",
                              expected="--freeze-backbone --unfreeze-after N (N >= 1 epochs of heads only)")
        self.distill = check_distill(self.distill)  # a checkpoint's JSON gives a list back
        if not isinstance(self.gradient_equilibrium, bool):
            raise ConfigError("gradient_equilibrium must be true or false", got=self.gradient_equilibrium)
        if self.device not in distributed.DEVICES and not self.device.startswith("cuda:"):
            raise ConfigError("unknown training device", got=self.device,
                              expected=" | ".join(distributed.DEVICES) + " | cuda:N")


@dataclass
class TrainResult:
    checkpoint: Path
    best_epoch: int
    best_val_loss: float
    val_exit_accuracy: list[float]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    is_main: bool = True  # False on torchrun ranks other than 0 (they print and write nothing)


class _Network(nn.Module):
    """The segments and heads of an EarlyExitNet without its gater: what the network optimizer and DDP own
    (the gater gets no gradient from the network's loss, which DDP would take for an error)."""

    def __init__(self, net: EarlyExitNet, gradient_equilibrium: bool = False):
        super().__init__()
        self.segments, self.heads = net.segments, net.heads
        self._forward_exits = net.forward_exits  # a bound method, not a submodule: the net is not registered twice
        self.gradient_equilibrium = gradient_equilibrium

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[Tensor] | None]:
        if self.gradient_equilibrium:  # same outputs, gradients rescaled at the segment boundaries (IMTA)
            return equilibrium_forward(self.segments, self.heads, x)
        return self._forward_exits(x)


def cost_rates(net: EarlyExitNet, spec: InputSpec) -> list[float]:
    """c_k = cumulative MACs of answering at exit k / MACs of the unsplit model (one image of `spec`)."""
    costs = count_costs(net, spec.channels, spec.height)
    return [c / costs.full_macs for c in costs.cumulative_macs]


def network_loss(logits: list[Tensor], confidences: list[Tensor] | None, y: Tensor, cfg: TrainConfig,
                 costs: list[float], gater: nn.Module | None) -> Tensor:
    """The objective the network's weights follow, a batch mean for `cfg.method`."""
    if cfg.method == "aep":
        return aep_loss(logits, y, cfg.weight_mode, distill=cfg.distill)
    if cfg.method == "eenet":
        return eenet_loss(logits, confidences, y, costs, lam=cfg.lam, distill=cfg.distill)
    return inner_loss(logits, y, costs, gater, lam=cfg.lam, T=cfg.temperature, distill=cfg.distill)


def _check_method(net: EarlyExitNet, model_cfg: ModelConfig, cfg: TrainConfig) -> None:
    untrained = model_cfg.weights is None and (model_cfg.model is None or model_cfg.model.startswith("torchvision:"))
    if cfg.freeze_backbone and untrained:
        raise ConfigError("--freeze-backbone keeps the backbone as it is, so it needs trained weights",
                          got=f"{model_cfg.model or model_cfg.backbone} without --weights",
                          expected="--weights FILE (a state_dict or torch.export file of your model)",
                          hint="or --model mypkg.models:build_net returning your trained model; drop --freeze-backbone "
                               "to train the whole network")
    if cfg.method == "eenet" and model_cfg.head in ("aep", "conv"):
        raise ConfigError("EENet training needs exit blocks with a confidence branch", got=f"head={model_cfg.head}",
                          expected="head plain | pool | bnpool", hint="--head pool (the EENet paper's choice)")
    if cfg.method == "budget" and net.gater is None:
        raise ConfigError("budget-aware training needs a gater on the network", got="ModelConfig.gater_features=None",
                          expected="gater features, e.g. confidence,entropy", hint="--gater-features confidence,entropy")


def check_frozen_weights(net: EarlyExitNet, model_cfg: ModelConfig) -> None:
    """Refuse to freeze a layer that the weights file does not hold as is: a classifier replaced for the data's
    number of classes, or a stem adapted to its channels, would stay random (or altered) for good."""
    if model_cfg.weights is None:  # a user's builder returned its own trained model
        return
    from edgeexit.models.weights import read_weights

    if model_cfg.weights == "imagenet":
        from edgeexit.models.efficientnet_lite import imagenet_state_dict

        saved = imagenet_state_dict()
    else:
        saved = read_weights(model_cfg.weights)
    by_shape: dict[tuple, list[Tensor]] = {}
    for t in saved.values():
        by_shape.setdefault(tuple(t.shape), []).append(t)
    missing = [f"{i}.{name}" for i, m in enumerate(frozen_modules(net)) for name, t in m.state_dict().items()
               if not any(t.dtype == s.dtype and torch.equal(t, s) for s in by_shape.get(tuple(t.shape), []))]
    if missing:
        raise ConfigError("--freeze-backbone would freeze layers that are not in your weights file",
                          got=f"{len(missing)} tensors, e.g. {', '.join(missing[:3])}",
                          expected=f"every weight of the backbone and classifier in {model_cfg.weights}",
                          hint="the classifier was replaced for the data's classes, or the stem adapted to its channels: "
                               "freeze a model trained on this data, or drop --freeze-backbone (--weights alone "
                               "fine-tunes everything)")


def _forward(model: nn.Module, x: Tensor, amp: bool) -> tuple[list[Tensor], list[Tensor] | None]:
    """Every exit's logits (and EENet confidences) in float32, the network run under autocast when `amp`."""
    with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
        logits, confs = model(x)
    return [o.float() for o in logits], None if confs is None else [c.float() for c in confs]


def frozen_modules(net: EarlyExitNet) -> list[nn.Module]:
    """What --freeze-backbone keeps fixed: every segment and the final classifier (the user's model)."""
    return [*net.segments, net.heads[-1]]


def backbone_frozen(cfg: TrainConfig, epoch: int) -> bool:
    return cfg.freeze_backbone and (cfg.unfreeze_after is None or epoch < cfg.unfreeze_after)


def _freeze(net: EarlyExitNet, frozen: bool) -> None:
    for m in frozen_modules(net):
        for p in m.parameters():
            p.requires_grad_(not frozen)


def _set_train_mode(net: EarlyExitNet, freeze_bn: bool, frozen: bool = False) -> None:
    net.train()
    if freeze_bn:
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
    if frozen:  # the user's model runs as at inference: fixed BatchNorm statistics, no dropout
        for m in frozen_modules(net):
            m.eval()


def _batch_totals(loss: Tensor, logits: list[Tensor], y: Tensor, *, exit_loss: bool) -> Tensor:
    """[loss·n, n, correct per exit (, summed cross-entropy per exit)] of one batch in float64: sums over batches
    and ranks give the means over a split."""
    with torch.no_grad():
        n = len(y)
        parts = [torch.stack([loss.detach().double() * n, loss.new_tensor(n, dtype=torch.float64)]),
                 torch.stack([(o.argmax(1) == y).sum() for o in logits]).double()]
        if exit_loss:
            parts.append(exit_cross_entropy([o.detach() for o in logits], y).sum(0).double())
    return torch.cat(parts)


@torch.no_grad()
def evaluate(net: EarlyExitNet, dataset: Dataset, cfg: TrainConfig, costs: list[float], *,
             ctx: DistContext | None = None, batch_size: int = 256) -> tuple[float, list[float]]:
    """Mean training objective and per-exit accuracy on a split (each rank takes its shard, the sums are shared)."""
    ctx = ctx or DistContext(device=next(net.parameters()).device)
    net.eval()
    amp = cfg.amp and ctx.device.type == "cuda"
    totals = torch.zeros(2 + net.num_exits, dtype=torch.float64, device=ctx.device)
    for x, y in batches(dataset, batch_size, shuffle=False):
        part = distributed.shard_slice(len(y), ctx)
        x, y = x[part].to(ctx.device), y[part].to(ctx.device)
        if not len(y):
            continue
        logits, confs = _forward(net.forward_exits, x, amp)
        totals += _batch_totals(network_loss(logits, confs, y, cfg, costs, net.gater), logits, y, exit_loss=False)
    distributed.all_reduce_sum(totals, ctx)
    n = int(totals[1])
    if n == 0:
        raise DatasetError("validation split is empty", got=0, expected=">= 1 sample", hint="raise --limit-val or the val fraction")
    return float(totals[0]) / n, (totals[2:] / n).tolist()


@dataclass
class _Optimizers:
    """The network's Adam (with its GradScaler on CUDA) and, for the budget method, the gater's Adam."""

    net: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    gater: torch.optim.Optimizer | None = None

    def state_dict(self) -> dict:
        return {"optimizer": self.net.state_dict(), "scaler": self.scaler.state_dict(),
                "gater_optimizer": self.gater.state_dict() if self.gater else None}

    def load_state_dict(self, ckpt: dict) -> None:
        self.net.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.gater is not None:
            if not ckpt.get("gater_optimizer"):
                raise CheckpointError("cannot resume budget training: the checkpoint has no gater optimizer",
                                      got=ckpt.get("train_config", {}).get("method"), expected="budget",
                                      hint="resume with the method the checkpoint was trained with")
            self.gater.load_state_dict(ckpt["gater_optimizer"])


def _optimizers(net: EarlyExitNet, cfg: TrainConfig, amp: bool) -> _Optimizers:
    body = [p for name, p in net.named_parameters() if not name.startswith("gater.")]
    opts = _Optimizers(torch.optim.Adam(body, lr=cfg.lr), torch.amp.GradScaler("cuda", enabled=amp))
    if cfg.method == "budget":
        opts.gater = torch.optim.Adam(net.gater.parameters(), lr=cfg.gater_lr)
    return opts


def network_lr(cfg: TrainConfig, step: int, total: int) -> float:
    """The network's learning rate at `step` of `total`: constant, or cosine-annealed to 0 (closed form of the
    step, so a resumed run follows the same schedule)."""
    if cfg.schedule == "constant":
        return cfg.lr
    return cfg.lr * (1 + math.cos(math.pi * min(step, total) / max(total, 1))) / 2


def gater_lr(cfg: TrainConfig, update: int, total: int) -> float:
    """Cosine annealing from gater_lr to gater_min_lr over the run's `total` gater updates (papers/003, Suppl. B).
    A closed form of the update index, so a resumed run follows the same schedule as an uninterrupted one."""
    t = min(update, total) / max(total, 1)
    return cfg.gater_min_lr + (cfg.gater_lr - cfg.gater_min_lr) * (1 + math.cos(math.pi * t)) / 2


def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


# Settings a resumed run may change without --adopt: how long to go on and where to run, never what a step does.
# `epochs` sets the length of the cosine schedule, so it may change only under the constant one.
RESUME_FREE = ("device", "patience")


def changed_settings(ckpt: dict, cfg: TrainConfig, data_info: dict) -> dict[str, tuple]:
    """{"--option": (checkpoint's value, value now)} for every training or data setting a resume would change."""
    # a checkpoint from before --gradient-equilibrium / --distill existed trained without them
    before = {"gradient_equilibrium": False, "distill": None, **ckpt["train_config"],
              **{f"data.{k}": v for k, v in ckpt["data"].items()}}
    now = {**asdict(cfg), **{f"data.{k}": v for k, v in data_info.items()}}
    free = set(RESUME_FREE)
    if before.get("schedule") == now["schedule"] == "constant":
        free.add("epochs")
    names = {"max_steps_per_epoch": "max-steps", "data.name": "dataset", "data.limit_train": "limit-train",
             "data.limit_val": "limit-val", "data.limit_test": "limit-test", "data.image_size": "image-size",
             "data.seed": "seed (data)", "data.root": "dataset root"}
    return {f"--{names.get(k, k.replace('_', '-'))}": (before.get(k), now.get(k))
            for k in sorted(set(before) | set(now)) if k not in free and before.get(k) != now.get(k)}


def _check_resume_settings(ckpt: dict, cfg: TrainConfig, data_info: dict, adopt: bool) -> None:
    """A resumed run must follow the schedule, batch size and data the checkpoint was trained with: refuse a change,
    naming each, unless the user says to adopt the new settings (which the next checkpoint then records)."""
    diff = changed_settings(ckpt, cfg, data_info)
    if diff and not adopt:
        raise CheckpointError("cannot resume: these settings differ from the checkpoint's",
                              got="; ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in diff.items()),
                              expected="the checkpoint's: " + " ".join(f"{k} {old}" for k, (old, _) in diff.items()),
                              hint="pass the checkpoint's options again, or add --adopt to go on with the new "
                                   "settings (the checkpoint then records them)")


def train(net: EarlyExitNet, model_cfg: ModelConfig, train_set: Dataset, val_set: Dataset, spec: InputSpec,
          data_info: dict, cfg: TrainConfig, out: Path, *, resume: bool = False, progress: bool = True,
          stop_after_epochs: int | None = None, adopt: bool = False) -> TrainResult:
    """Train `net` with `cfg.method` and write `out` (the best checkpoint, by validation loss) after every epoch.

    `resume=True` continues from `out`: weights, optimizers (the gater's too), GradScaler, epoch, step,
    early-stopping state and data order. Stochastic layers are seeded per (seed, epoch, rank) and the gater's
    learning rate is a closed form of its step, so on CPU a run stopped (`stop_after_epochs`: end this call after
    that many epochs, e.g. a job's time slot) and resumed with the same config gives the same weights as an
    uninterrupted one. A resume with other settings (learning rate, schedule, batch size, limits...) is refused
    unless `adopt`. Under torchrun every rank calls this; rank 0 writes.
    On CPU the run is deterministic: the same seed and data give a byte-identical checkpoint (no wall-clock times
    inside; they go to `<out stem>.timing.json` beside it).
    On return `net` holds the best weights, on the CPU, in eval mode.
    """
    out = Path(out)
    ctx = distributed.setup(cfg.device)
    deterministic, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    if ctx.device.type == "cpu":  # the same seed gives the same weights; on CUDA this would cost speed (opt in)
        # warn_only: an operator of a user's model without a deterministic kernel warns rather than stops training
        torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train(net, model_cfg, train_set, val_set, spec, data_info, cfg, out, resume, progress, ctx,
                      stop_after_epochs, adopt)
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        net.to("cpu").eval()
        for p in net.parameters():  # a frozen backbone is frozen for training only
            p.requires_grad_(True)
        distributed.teardown(ctx)


def _train(net, model_cfg, train_set, val_set, spec, data_info, cfg, out, resume, progress, ctx: DistContext,
           stop_after_epochs: int | None, adopt: bool = False) -> TrainResult:
    _check_method(net, model_cfg, cfg)
    if cfg.freeze_backbone and not resume:
        check_frozen_weights(net, model_cfg)
    if cfg.batch_size < ctx.world_size:
        raise ConfigError("the global batch is smaller than the number of processes", got=cfg.batch_size,
                          expected=f">= {ctx.world_size}", hint="raise --batch-size (it is split over the ranks)")
    costs = cost_rates(net, spec)
    gen = torch.Generator().manual_seed(cfg.seed)
    steps = math.ceil(len(train_set) / cfg.batch_size)
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    start_epoch, global_step, best_loss, best_epoch, bad_epochs, history, best_state = 0, 0, math.inf, -1, 0, [], None
    ckpt = None
    if resume:
        ckpt = load_checkpoint(out)
        if ckpt["model_config"] != model_cfg.to_dict():
            raise CheckpointError("cannot resume: the checkpoint was trained with another model config",
                                  got=ckpt["model_config"], expected=model_cfg.to_dict(), hint="use the same options, or start anew")
        if ckpt["train_config"].get("method", "aep") != cfg.method:
            raise CheckpointError("cannot resume with another training method", got=cfg.method,
                                  expected=ckpt["train_config"].get("method", "aep"), hint="use the checkpoint's --method")
        _check_resume_settings(ckpt, cfg, data_info, adopt)
        net.load_state_dict(ckpt["last_state_dict"] if "last_state_dict" in ckpt else ckpt["state_dict"])
        gen.set_state(ckpt["generator"])
        start_epoch, best_loss, best_epoch = ckpt["epoch"] + 1, ckpt["best_val_loss"], ckpt["best_epoch"]
        global_step = ckpt.get("global_step", start_epoch * steps)
        bad_epochs, history, best_state = ckpt["bad_epochs"], ckpt["history"], ckpt["state_dict"]
        history = _with_seconds(history, _read_timing(out))

    net.to(ctx.device)
    amp = cfg.amp and ctx.device.type == "cuda"
    # Adam skips parameters without a gradient, so the frozen ones can sit in the optimizer from the start and join
    # in when --unfreeze-after lets them (their Adam state starts then).
    frozen = backbone_frozen(cfg, start_epoch)
    _freeze(net, frozen)
    opts = _optimizers(net, cfg, amp)
    gater_updates = math.ceil(cfg.epochs * steps / cfg.gater_period)
    if ckpt is not None:
        opts.load_state_dict(ckpt)
    model = distributed.wrap(_Network(net, cfg.gradient_equilibrium), ctx, sync_bn=cfg.sync_bn)
    gater_model = distributed.wrap(net.gater, ctx) if cfg.method == "budget" else None

    t0 = time.time()
    columns = [TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[exits]}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not (progress and ctx.is_main), transient=False) as bar:
        last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, start_epoch + stop_after_epochs)
        for epoch in range(start_epoch, last_epoch):
            if bad_epochs >= cfg.patience:
                break
            # Dropout / stochastic depth draw from a stream fixed by (seed, epoch, rank): resume-exact, and the
            # ranks draw independent masks for their shards.
            torch.manual_seed(cfg.seed + 1_000_003 * epoch + ctx.rank)
            if frozen and not backbone_frozen(cfg, epoch):  # two-stage training: now everything, jointly
                frozen = False
                _freeze(net, False)
                model = distributed.wrap(_Network(net, cfg.gradient_equilibrium), ctx, sync_bn=cfg.sync_bn)  # DDP must see the new parameters
            _set_train_mode(net, cfg.freeze_bn, frozen)
            task = bar.add_task("train", total=steps, epoch=f"{epoch + 1}/{cfg.epochs}", loss=float("nan"), exits="")
            totals = torch.zeros(2 + 2 * net.num_exits, dtype=torch.float64, device=ctx.device)
            epoch_t0 = time.time()
            for step, (x, y) in enumerate(batches(train_set, cfg.batch_size, shuffle=True, generator=gen)):
                if step >= steps:
                    break
                if len(y) < ctx.world_size:
                    continue  # a last batch too small to give every rank a sample
                part = distributed.shard_slice(len(y), ctx)
                scale = distributed.loss_scale(part.stop - part.start, len(y), ctx)
                x, y = x[part].to(ctx.device, non_blocking=True), y[part].to(ctx.device, non_blocking=True)
                logits, confs = _forward(model, x, amp)
                if cfg.method == "budget" and global_step % cfg.gater_period == 0:
                    # Outer problem (Eq. 10, 12) at θ* = the network after the last `gater_period` inner steps;
                    # it sees the logits detached, so it moves only φ. Then the inner step uses the new φ.
                    g_loss = outer_loss(logits, y, costs, gater_model, lam=cfg.lam, T=cfg.temperature) * scale
                    for group in opts.gater.param_groups:
                        group["lr"] = gater_lr(cfg, global_step // cfg.gater_period, gater_updates)
                    opts.gater.zero_grad(set_to_none=True)
                    g_loss.backward()
                    opts.gater.step()
                loss = network_loss(logits, confs, y, cfg, costs, net.gater)
                if not amp and not torch.isfinite(loss):
                    raise ConfigError("training loss is not finite", got=float(loss), expected="a finite loss",
                                      hint="lower the learning rate, or check the data for NaN")
                opts.net.zero_grad(set_to_none=True)
                for group in opts.net.param_groups:
                    group["lr"] = network_lr(cfg, global_step, cfg.epochs * steps)
                opts.scaler.scale(loss * scale).backward()
                opts.scaler.step(opts.net)
                opts.scaler.update()
                global_step += 1
                totals += _batch_totals(loss, logits, y, exit_loss=True)
                if ctx.is_main and progress:  # rank 0 shows its own shard; the epoch's record is over every rank
                    seen = float(totals[1])
                    acc = " ".join(f"{float(a) / seen:.2f}" for a in totals[2:2 + net.num_exits])
                    ce = " ".join(f"{float(c) / seen:.2f}" for c in totals[2 + net.num_exits:])
                    bar.update(task, advance=1, loss=float(totals[0]) / seen, exits=f"exit CE {ce} | acc {acc}")
            distributed.all_reduce_sum(totals, ctx)
            epoch_seconds = time.time() - epoch_t0
            seen = max(float(totals[1]), 1.0)
            val_loss, val_acc = evaluate(net, val_set, cfg, costs, ctx=ctx)
            record = {"epoch": epoch, "train_loss": float(totals[0]) / seen, "val_loss": val_loss,
                      "train_exit_loss": [float(c) / seen for c in totals[2 + net.num_exits:]],
                      "train_exit_accuracy": [float(a) / seen for a in totals[2:2 + net.num_exits]],
                      "val_exit_accuracy": val_acc, "seconds": epoch_seconds}
            history.append(record)
            bar.update(task, exits=f"val loss {val_loss:.3f} | val exit acc {' '.join(f'{a:.3f}' for a in val_acc)}")
            if val_loss < best_loss:
                best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
                best_state = _cpu_state(net)
            else:
                bad_epochs += 1
            if ctx.is_main:
                history_kept = [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # no wall clock
                save_checkpoint(out, {
                    "model_config": model_cfg.to_dict(), "input_spec": spec.to_dict(), "data": data_info,
                    "train_config": asdict(cfg), "state_dict": best_state, "last_state_dict": _cpu_state(net),
                    **opts.state_dict(), "generator": gen.get_state(), "epoch": epoch, "global_step": global_step,
                    "best_epoch": best_epoch, "best_val_loss": best_loss, "bad_epochs": bad_epochs, "history": history_kept,
                    "cost_rates": costs, "world_size": ctx.world_size,
                })
                _write_timing(out, history)
    if best_state is not None:
        net.load_state_dict(best_state)
    best = next((h for h in history if h["epoch"] == best_epoch), history[-1] if history else {"val_exit_accuracy": []})
    return TrainResult(out, best_epoch, best_loss, best["val_exit_accuracy"], history, time.time() - t0, ctx.is_main)


def timing_path(out: Path) -> Path:
    """Where the epochs' wall-clock seconds go: beside the checkpoint, whose bytes must not depend on the clock."""
    return Path(out).with_name(f"{Path(out).stem}.timing.json")


def _write_timing(out: Path, history: list[dict]) -> None:
    from edgeexit import jsonio

    jsonio.write_json(timing_path(out), {"epoch_seconds": {str(h["epoch"]): h.get("seconds") for h in history}})


def _read_timing(out: Path) -> dict[str, float]:
    """The earlier epochs' seconds of a resumed run; {} when the file is missing or not ours (timing is a report)."""
    import json

    try:
        data = json.loads(timing_path(out).read_text())
        seconds = data["epoch_seconds"]
        return {str(k): float(v) for k, v in seconds.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _with_seconds(history: list[dict], seconds: dict[str, float]) -> list[dict]:
    return [{**h, "seconds": seconds.get(str(h["epoch"]))} for h in history]
