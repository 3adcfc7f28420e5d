"""Typer options that more than one command takes, declared once. `train` and `build` share the data, model and
training options through `@shared_train_options`: it adds them to the command's signature and hands the command
their values as one dict (`shared`), which `edgeexit.options.train_options` turns into the typed configs."""

from __future__ import annotations

import functools
import inspect
import typing
from pathlib import Path
from typing import Optional

import typer

DATASET = typer.Option("fashion-mnist", help="fashion-mnist | synthetic | folder:/path | cifar10:/path")
RUN_DIR = typer.Option(Path("runs/default"), "--run-dir", help="where checkpoint, calibration and bundle go")
TARGET = typer.Option("cpu", help="see `edgeexit targets`")
PRECISION = typer.Option(None, help="one of the target's precisions (default: its first)")
AGAIN_MODEL = typer.Option(None, help="a checkpoint of your own model (package.module:function): pass the same --model "
                                      "again; edgeexit never calls a function named in a file")
AGAIN_MODEL_KWARGS = typer.Option(None, help="with --model: its keyword arguments as JSON (default: the checkpoint's; "
                                             "if given, they must equal them)")
TEMPERATURE = typer.Option(True, help="temperature scaling per exit, fitted on the calibration set (NLL) before the "
                                      "thresholds (search / fractions with a logit score)")
LIMIT = typer.Option(None, min=1, help="use the first N samples of the split")
# numeric bounds: click refuses what is out of range with a usage error (exit code 2) before anything runs
SEED = typer.Option(0, min=0, max=2**32 - 1, help="seeds weights, data order and splits (numpy takes < 2^32)")

# name -> (type, option): what `train` and `build` both take, in the order --help lists them
TRAIN_SHARED: dict[str, tuple[object, typer.models.OptionInfo]] = {
    "dataset": (str, DATASET),
    "backbone": (str, typer.Option("resnet18", help="see `edgeexit backbones`")),
    "exits": (str, typer.Option("stages", help="stages | full | blocks | eenet:<pareto|golden|fine|linear|quadratic>:<n> "
                                               "| comma-separated block indices")),
    "head": (Optional[str], typer.Option(None, help="aep | plain | pool | bnpool (default: pool for --method eenet, "
                                                    "else aep)")),
    "image_size": (int, typer.Option(32, min=1, max=4096, help="input height and width; each backbone has a smallest")),
    "method": (str, typer.Option("aep", help="aep (weighted ensemble, papers/000) | eenet (confidence + cost L_v2, "
                                             "papers/002) | budget (bi-level gater, papers/003)")),
    "weight_mode": (str, typer.Option("unif", help="AEP weights: desc | asc | mix | unif")),
    "lam": (Optional[float], typer.Option(None, "--lam", help="cost weight λ (default: 1 for eenet, 2 for budget)")),
    "gater_features": (str, typer.Option("confidence,entropy", help="budget: the gater's inputs, from "
                                                                    "confidence,margin,entropy")),
    "gater_period": (int, typer.Option(10, min=1, help="budget: network steps per gater step (papers/003: 10 on CIFAR, "
                                                       "100 on ImageNet)")),
    "device": (str, typer.Option("auto", help="auto | cpu | cuda | cuda:N; under torchrun each rank takes "
                                              "cuda:LOCAL_RANK")),
    "weights": (Optional[str], typer.Option(None, help="'imagenet' (efficientnet_lite0's shipped weights), or your "
                                                       "trained model's weights: a state_dict file "
                                                       "(torch.save(model.state_dict())) or a torch.export archive (a "
                                                       "whole pickled model or a TorchScript archive is refused: "
                                                       "loading it could run code)")),
    "model": (Optional[str], typer.Option(None, help="your own model instead of --backbone: package.module:function "
                                                     "(returns an nn.Module) or torchvision:<name>; name its split "
                                                     "points with --exits layer1,layer2")),
    "model_kwargs": (Optional[str], typer.Option(None, help="keyword arguments of --model as JSON, e.g. "
                                                            "'{\"num_classes\": 10}'")),
    "freeze_backbone": (bool, typer.Option(False, help="train the exit heads only: the backbone's weights and BatchNorm "
                                                       "statistics stay as in --weights, so the final exit answers as "
                                                       "your model does")),
    "unfreeze_after": (Optional[int], typer.Option(None, min=1, help="with --freeze-backbone: after N epochs of heads "
                                                                     "only, train everything jointly")),
    "epochs": (int, typer.Option(100, min=1)),
    "batch_size": (int, typer.Option(64, min=1)),
    "lr": (float, typer.Option(1e-4)),
    "schedule": (str, typer.Option("constant", help="learning rate: constant (the AEP paper) | cosine (annealed to 0)")),
    "seed": (int, SEED),
    "max_steps": (Optional[int], typer.Option(None, min=1, help="cap on steps per epoch (quick runs)")),
    "limit_train": (Optional[int], LIMIT),
    "limit_val": (Optional[int], LIMIT),
    "limit_test": (Optional[int], LIMIT),
}


def shared_train_options(**overrides: typer.models.OptionInfo):
    """Add TRAIN_SHARED (with `overrides`: other defaults or help for this command) to a command whose own signature
    ends in `shared: dict`; the command gets their values in `shared`."""
    def decorate(fn):
        hints = typing.get_type_hints(fn)  # the command's own annotations, evaluated in its module
        own = [p.replace(annotation=hints.get(p.name, p.annotation))
               for p in inspect.signature(fn).parameters.values() if p.name != "shared"]
        added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                                   default=overrides.get(name, option))
                 for name, (kind, option) in TRAIN_SHARED.items()]
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added

        @functools.wraps(fn)
        def command(**kwargs):
            shared = {name: kwargs.pop(name) for name in TRAIN_SHARED}
            return fn(shared=shared, **kwargs)

        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command
    return decorate


# -- backend names: the one place the CLI names backends (the backend registry, issue 17 item 2, replaces this) --
BACKEND = typer.Option(None, help="onnxruntime | onnxruntime-cuda | torch | torch-cuda (default: the bundle's target's)")
