"""Read a user's trained weights from a file without running code from it, and load them into a model.

Accepted files (`read_weights`):

- a state_dict saved with `torch.save(model.state_dict(), path)` (also `{"state_dict": ...}` or `{"model": ...}`,
  and DataParallel's `module.` prefix), read with `torch.load(weights_only=True)`;
- a `torch.export` archive, `torch.export.save(torch.export.export(model, (x,)), path)`: its state_dict, after
  the same allow-list check and weights-only load as a bundle's `.pt2` (`edgeexit.runtime.torch_pt2.load_program`).

Refused, with the way to save one of the above:

- a whole pickled model (`torch.save(model, path)`): unpickling it would import and run whatever classes the file
  names, which `weights_only=True` exists to prevent;
- a TorchScript archive (`torch.jit.save`): `torch.jit.load` restores its modules by running their compiled
  `__setstate__` methods and the archive's own TorchScript code (one can, for instance, map another file with
  `torch.from_file(shared=True)` and overwrite it). Reading its tensors without that would mean a second
  TorchScript unpickler, which is a larger thing to trust than asking for the state_dict, so it is refused; the
  hint says how to turn it into a state_dict where the archive is trusted.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from edgeexit.errors import CheckpointError

SAVE_HINT = ("save the weights with torch.save(model.state_dict(), path), or the model as a torch.export archive "
             "(torch.export.save(torch.export.export(model, (x,)), path))")
EXPECTED = "a state_dict or torch.export file"
TORCHSCRIPT_HINT = ("TorchScript runs its own code when loaded, so edgeexit does not load it; where you trust the "
                    "archive, save its state_dict: torch.save(torch.jit.load(path).state_dict(), 'weights.pt')")


def _archive_kind(path: Path) -> str:
    """"jit", "export" or "torch" (a torch.save file) from the names inside the zip; "torch" for legacy files.

    Only picks which refusal or which checked loader applies: a file that hides what it is ends up in
    torch.load(weights_only=True) (which itself refuses TorchScript) or in the `.pt2` allow-list check."""
    if not zipfile.is_zipfile(path):
        return "torch"
    with zipfile.ZipFile(path) as z:
        names = [n.casefold() for n in z.namelist()]  # torch's zip reader matches names case-insensitively
    if any(n.endswith("/archive_format") or "/models/" in n and n.endswith(".json") for n in names):
        return "export"
    if any("/code/" in n or n.endswith("/constants.pkl") for n in names):
        return "jit"
    return "torch"


def read_weights(path: str | Path) -> dict[str, Tensor]:
    """The tensors of a weights file (see the module docstring), by their names in the user's model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("weights file not found", got=str(path), expected=EXPECTED, hint=SAVE_HINT)
    try:
        kind = _archive_kind(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError("could not read the weights file", got=f"{path}: {type(err).__name__}: {err}",
                              expected=EXPECTED, hint=SAVE_HINT) from err
    if kind == "jit":
        raise CheckpointError("the weights file is a TorchScript archive; loading it would run its code",
                              got=str(path), expected=EXPECTED, hint=TORCHSCRIPT_HINT)
    if kind == "export":
        from edgeexit.runtime.torch_pt2 import load_program

        program = load_program(path, error=CheckpointError, hint=SAVE_HINT)
        return {k: v.detach().clone() for k, v in program.state_dict.items()}
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "TorchScript" in str(err):  # torch.load's own refusal of a TorchScript zip that hid its layout
            raise CheckpointError("the weights file is a TorchScript archive; loading it would run its code",
                                  got=str(path), expected=EXPECTED, hint=TORCHSCRIPT_HINT) from err
        raise CheckpointError("the weights file holds pickled Python objects (a whole saved model?); refusing to "
                              "unpickle it, which could run code", got=f"{path}: {str(err).splitlines()[0][:160]}",
                              expected=EXPECTED, hint=SAVE_HINT) from err
    except Exception as err:  # torch.load raises many types on a damaged file
        raise CheckpointError("could not read the weights file", got=f"{path}: {type(err).__name__}: {err}",
                              expected=EXPECTED, hint=SAVE_HINT) from err
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
