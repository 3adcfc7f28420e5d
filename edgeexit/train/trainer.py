"""Train the exit network jointly (AEP loss Σ α_i·CE_i by default): Adam, early stopping on the validation
loss, atomic checkpoints that can be resumed, rich progress with per-exit accuracy."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from edgeexit.data.spec import InputSpec, TensorImages
from edgeexit.errors import CheckpointError, ConfigError
from edgeexit.models import EarlyExitNet, ModelConfig
from edgeexit.train.checkpoint import load_checkpoint, save_checkpoint
from edgeexit.train.losses import aep_loss

METHODS = ("aep",)
WEIGHT_MODES = ("desc", "asc", "mix", "unif")


@dataclass
class TrainConfig:
    """Defaults are the AEP paper's settings (Adam 1e-4, batch 64, patience 12 on the validation loss)."""

    method: str = "aep"
    weight_mode: str = "unif"
    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-4
    patience: int = 12
    seed: int = 0
    max_steps_per_epoch: int | None = None  # cap for quick runs

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError("unknown training method", got=self.method, expected=", ".join(METHODS))
        if self.weight_mode not in WEIGHT_MODES:
            raise ConfigError("unknown AEP weight mode", got=self.weight_mode, expected=", ".join(WEIGHT_MODES))
        for name in ("epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1", got=getattr(self, name), expected=">= 1")
        if not self.lr > 0:
            raise ConfigError("learning rate must be > 0", got=self.lr, expected="> 0")


@dataclass
class TrainResult:
    checkpoint: Path
    best_epoch: int
    best_val_loss: float
    val_exit_accuracy: list[float]
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def batches(dataset: Dataset, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of (images, labels); in-memory datasets are sliced directly (much faster than a DataLoader)."""
    if isinstance(dataset, TensorImages):
        n = len(dataset)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            yield dataset.images[idx], dataset.labels[idx]
        return
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)


def training_loss(net: EarlyExitNet, x: Tensor, y: Tensor, cfg: TrainConfig) -> tuple[Tensor, list[Tensor]]:
    logits = net(x)
    return aep_loss(logits, y, cfg.weight_mode), logits


@torch.no_grad()
def evaluate(net: EarlyExitNet, dataset: Dataset, cfg: TrainConfig, batch_size: int = 256) -> tuple[float, list[float]]:
    """Mean training loss and per-exit accuracy on a split."""
    net.eval()
    total, n, correct = 0.0, 0, None
    for x, y in batches(dataset, batch_size, shuffle=False):
        loss, logits = training_loss(net, x, y, cfg)
        total += float(loss) * len(y)
        n += len(y)
        hits = torch.stack([(out.argmax(1) == y).sum() for out in logits])
        correct = hits if correct is None else correct + hits
    if n == 0:
        raise ConfigError("validation split is empty", got=0, expected=">= 1 sample", hint="raise --limit-val or the val fraction")
    return total / n, (correct.double() / n).tolist()


def train(net: EarlyExitNet, model_cfg: ModelConfig, train_set: Dataset, val_set: Dataset, spec: InputSpec,
          data_info: dict, cfg: TrainConfig, out: Path, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train `net` and write `out` (the best checkpoint, by validation loss) after every epoch.

    `resume=True` continues from `out` (weights, optimizer, epoch, early-stopping state, RNG).
    """
    out = Path(out)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
    start_epoch, best_loss, best_epoch, bad_epochs, history = 0, math.inf, -1, 0, []
    best_state = None
    if resume:
        ckpt = load_checkpoint(out)
        if ckpt["model_config"] != model_cfg.to_dict():
            raise CheckpointError("cannot resume: the checkpoint was trained with another model config",
                                  got=ckpt["model_config"], expected=model_cfg.to_dict(), hint="use the same options, or start anew")
        net.load_state_dict(ckpt["last_state_dict"] if "last_state_dict" in ckpt else ckpt["state_dict"])
        opt.load_state_dict(ckpt["optimizer"])
        gen.set_state(ckpt["generator"])
        start_epoch, best_loss, best_epoch = ckpt["epoch"] + 1, ckpt["best_val_loss"], ckpt["best_epoch"]
        bad_epochs, history, best_state = ckpt["bad_epochs"], ckpt["history"], ckpt["state_dict"]
    steps = math.ceil(len(train_set) / cfg.batch_size)
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)
    t0 = time.time()
    columns = [TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.3f}"), TextColumn("{task.fields[acc]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        for epoch in range(start_epoch, cfg.epochs):
            if bad_epochs >= cfg.patience:
                break
            net.train()
            task = bar.add_task("train", total=steps, epoch=f"{epoch + 1}/{cfg.epochs}", loss=float("nan"), acc="")
            running, seen, hits = 0.0, 0, None
            for step, (x, y) in enumerate(batches(train_set, cfg.batch_size, shuffle=True, generator=gen)):
                if step >= steps:
                    break
                loss, logits = training_loss(net, x, y, cfg)
                if not torch.isfinite(loss):
                    raise ConfigError("training loss is not finite", got=float(loss), expected="a finite loss",
                                      hint="lower the learning rate, or check the data for NaN")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                running += loss.item() * len(y)
                seen += len(y)
                h = torch.stack([(o.argmax(1) == y).sum() for o in logits.__iter__()])
                hits = h if hits is None else hits + h
                acc = " ".join(f"{a:.2f}" for a in (hits.double() / seen).tolist())
                bar.update(task, advance=1, loss=running / seen, acc=f"exit acc {acc}")
            val_loss, val_acc = evaluate(net, val_set, cfg)
            record = {"epoch": epoch, "train_loss": running / max(seen, 1), "val_loss": val_loss, "val_exit_accuracy": val_acc}
            history.append(record)
            bar.update(task, acc=f"val exit acc {' '.join(f'{a:.3f}' for a in val_acc)}")
            if val_loss < best_loss:
                best_loss, best_epoch, bad_epochs = val_loss, epoch, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                bad_epochs += 1
            save_checkpoint(out, {
                "model_config": model_cfg.to_dict(), "input_spec": spec.to_dict(), "data": data_info,
                "train_config": asdict(cfg), "state_dict": best_state, "last_state_dict": net.state_dict(),
                "optimizer": opt.state_dict(), "generator": gen.get_state(), "epoch": epoch, "best_epoch": best_epoch,
                "best_val_loss": best_loss, "bad_epochs": bad_epochs, "history": history,
            })
    if best_state is not None:
        net.load_state_dict(best_state)
    net.eval()
    best = next((h for h in history if h["epoch"] == best_epoch), history[-1] if history else {"val_exit_accuracy": []})
    return TrainResult(out, best_epoch, best_loss, best["val_exit_accuracy"], history, time.time() - t0)
