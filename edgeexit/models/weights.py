"""Read a user's trained weights from a file without running code from it, and load them into a model.

Accepted files (`read_weights`):

- a state_dict saved with `torch.save(model.state_dict(), path)` (also `{"state_dict": ...}` or `{"model": ...}`,
  and DataParallel's `module.` prefix), read with `torch.load(weights_only=True)`;
- a TorchScript archive, `torch.jit.script(model).save(path)` or `torch.jit.trace(...)`: its parameters and
  buffers are read, its code is never run;
- a `torch.export` archive, `torch.export.save(torch.export.export(model, (x,)), path)`: its state_dict.

A whole pickled model (`torch.save(model, path)`) is refused: unpickling it would import and run whatever
classes the file names, which `weights_only=True` exists to prevent. The error says how to save one of the above.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from edgeexit.errors import CheckpointError

SAVE_HINT = ("save the weights with torch.save(model.state_dict(), path), or the whole model as TorchScript "
             "(torch.jit.script(model).save(path)) or a torch.export archive (torch.export.save(ep, path))")


def _archive_kind(path: Path) -> str:
    """"jit", "export" or "torch" (a torch.save file) from the names inside the zip; "torch" for legacy files."""
    if not zipfile.is_zipfile(path):
        return "torch"
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    if any(n.endswith("archive_format") or "/models/" in n and n.endswith(".json") for n in names):
        return "export"
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "jit"
    return "torch"


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file (see the module docstring), by their names in the user's model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("weights file not found", got=str(path), expected="a state_dict, TorchScript or "
                              "torch.export file", hint=SAVE_HINT)
    kind = _archive_kind(path)
    try:
        if kind == "jit":
            module = torch.jit.load(str(path), map_location="cpu")
            return {k: v.detach().clone() for k, v in module.state_dict().items()}
        if kind == "export":
            program = torch.export.load(str(path))
            return {k: v.detach().clone() for k, v in program.state_dict.items()}
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError("the weights file holds pickled Python objects (a whole saved model?); refusing to "
                              "unpickle it, which could run code", got=f"{path}: {str(err).splitlines()[0][:160]}",
                              expected="a state_dict, TorchScript or torch.export file", hint=SAVE_HINT) from err
    except Exception as err:  # torch.load / jit.load / export.load raise many types on a damaged file
        raise CheckpointError("could not read the weights file", got=f"{path}: {type(err).__name__}: {err}",
                              expected="a state_dict, TorchScript or torch.export file", hint=SAVE_HINT) from err
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError("the weights file is not a state_dict", got=f"{path}: {type(state).__name__}",
                              expected="a dict of parameter name -> tensor", hint=SAVE_HINT)
    if all(k.startswith("module.") for k in state):  # saved from DataParallel / DDP
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return dict(state)


def match_shapes(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Rebuild the convolutions and linear layers of `model` whose weight in `state` has another shape (a user's
    model trained on grayscale images or on 10 classes, loaded into the stock torchvision architecture), so that
    `load_state_dict(state)` fits. Other mismatches are left to load_state_dict to report."""
    for name, module in list(model.named_modules()):
        weight = state.get(f"{name}.weight" if name else "weight")
        if weight is None or not hasattr(module, "weight") or module.weight is None or weight.shape == module.weight.shape:
            continue
        if isinstance(module, nn.Conv2d) and weight.dim() == 4:
            new: nn.Module = nn.Conv2d(weight.shape[1] * module.groups, weight.shape[0], module.kernel_size,
                                       module.stride, module.padding, module.dilation, module.groups,
                                       module.bias is not None, module.padding_mode)
        elif isinstance(module, nn.Linear) and weight.dim() == 2:
            new = nn.Linear(weight.shape[1], weight.shape[0], bias=module.bias is not None)
        else:
            continue
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)


def load_weights(model: nn.Module, path: str | Path | dict[str, Tensor], *, what: str, resize: bool = True) -> nn.Module:
    """`model` with the weights of `path` (a file, or a state_dict already read) loaded strictly; with `resize`,
    convolutions and linear layers take the file's shapes first (`match_shapes`)."""
    state = path if isinstance(path, dict) else read_weights(path)
    path = "the state_dict" if isinstance(path, dict) else path
    if resize:
        match_shapes(model, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()][:4]
        raise CheckpointError(f"the weights file does not fit {what}", got=f"{path}: {' '.join(lines)[:400]}",
                              expected=f"the state_dict of {what}",
                              hint="save the weights of the same architecture (and its constructor arguments, e.g. "
                                   "--model-kwargs)") from err
    return model
