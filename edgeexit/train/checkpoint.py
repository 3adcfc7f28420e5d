"""Checkpoints that carry everything needed to rebuild the model and its data: model config (the gater's features
and width too), input spec (with class names), dataset settings, and the training state `train` resumes from
(best and last weights, the gater's included; the network's and the gater's Adam, the GradScaler, epoch, global
step, data-order generator, early-stopping state). Written atomically; validated on load."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from edgeexit import jsonio
from edgeexit.errors import CheckpointError
from edgeexit.models import EarlyExitNet, ModelConfig, build_model
from edgeexit.models.user import PassedModel, check_stored_spec

FORMAT = "edgeexit.checkpoint/1"
REQUIRED = ("format", "model_config", "input_spec", "data", "state_dict", "train_config", "epoch", "history")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """torch.save to memory, then an atomic write: a crash never leaves half a checkpoint."""
    buf = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buf)
    jsonio.write_atomic(Path(path), buf.getvalue())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint at `path`, checked; a pruned.pt without weights of its own gets those of the checkpoint.pt
    beside it (edgeexit.rundir.resolve_pruned)."""
    ckpt = _read_checkpoint(Path(path))
    if ckpt.get("weights_from") is not None:
        from edgeexit.rundir import resolve_pruned

        return resolve_pruned(path, ckpt, read=_read_checkpoint)
    return ckpt


def _read_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("checkpoint not found", got=str(path), expected="a file written by `edgeexit train`",
                              hint="run `edgeexit train` first, or pass the run directory's checkpoint.pt")
    try:
        # weights_only: a checkpoint is data (tensors, numbers, strings, lists, dicts); it never runs code
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError("checkpoint holds objects other than tensors and plain data; refusing to load it",
                              got=f"{path}: {str(err).splitlines()[0][:200]}", expected=f"an {FORMAT} file",
                              hint="edgeexit checkpoints hold only data; this file may be crafted to run code") from err
    except Exception as err:  # torch raises many types for a damaged zip
        raise CheckpointError("checkpoint is corrupt or not a torch file", got=f"{path}: {type(err).__name__}: {err}",
                              expected=FORMAT, hint="the file was truncated or is not an edgeexit checkpoint; retrain or resume") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        got = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError("not an edgeexit checkpoint", got=got, expected=FORMAT,
                              hint="pass a checkpoint written by `edgeexit train`")
    missing = [k for k in REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError("checkpoint lacks keys", got=missing, expected=list(REQUIRED), hint="retrain with `edgeexit train`")
    return ckpt


def model_from_checkpoint(ckpt: dict[str, Any], *, unpruned: bool = False,
                          model: PassedModel | None = None) -> tuple[EarlyExitNet, ModelConfig]:
    """Rebuild the network from the checkpoint's config and load its weights strictly.

    A pruned checkpoint (`edgeexit prune`) names the exits it kept: the sub-network is cut the same way, or,
    with `unpruned=True`, the whole trained network it was cut from is rebuilt (the reference model).
    A user's own model (`package.module:function`) is rebuilt only when `model` is the same spec, passed again on
    the command line (`check_stored_spec`); built-in backbones and torchvision models need nothing. The stored
    weights file is never read again (the state_dict holds the weights).
    """
    stored = ckpt["model_config"]
    if not isinstance(stored, dict):
        raise CheckpointError("checkpoint's model config is not a mapping", got=type(stored).__name__,
                              expected="the model config `edgeexit train` writes", hint="retrain with `edgeexit train`")
    spec, kwargs = stored.get("model"), stored.get("model_kwargs")
    if spec is not None and not isinstance(spec, str) or kwargs is not None and not isinstance(kwargs, dict):
        raise CheckpointError("checkpoint's model spec is malformed", got=f"{spec!r} {kwargs!r}",
                              expected="package.module:function or torchvision:<name>, keyword arguments as a mapping",
                              hint="retrain with `edgeexit train`")
    check_stored_spec(spec, kwargs, model, where="the checkpoint")
    cfg = ModelConfig.from_dict({**stored, "weights": None})
    net = build_model(cfg)
    state, cut_after = ckpt["state_dict"], None
    if ckpt.get("kept_exits") is not None:
        if unpruned:
            state = ckpt["unpruned_state_dict"]
        elif ckpt.get("state_is_unpruned"):  # the whole network's weights (edgeexit.rundir.resolve_pruned)
            cut_after = ckpt["kept_exits"]
        else:
            net = net.select_exits(ckpt["kept_exits"])
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0:3]
        raise CheckpointError("checkpoint weights do not match its model config", got=" ".join(first),
                              expected=f"a state_dict of {cfg.backbone} with exits {cfg.exits} and head {cfg.head}",
                              hint="the checkpoint was edited, or written by another edgeexit version; retrain") from err
    if cut_after is not None:
        net = net.select_exits(cut_after)
    return net.eval(), cfg
