"""Typer options that more than one command takes, declared once. `train` and `build` share the data, model and
training options through `@shared_train_options`: it adds them to the command's signature and hands the command
their values as one dict (`shared`), which `edgeexit.options.train_options` turns into the typed configs."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from pathlib import Path
from typing import Iterator, Optional

import typer

from edgeexit.runtime.registry import backend_help

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
# numeric bounds: click refuses what is out of range with a usage error (exit code 2) before anything runs
SEED = typer.Option(0, min=0, max=2**32 - 1, help="seeds weights, data order and splits (numpy takes < 2^32)")

# name -> (type, option): what `train` and `build` both take, in the order --help lists them
TRAIN_SHARED: dict[str, tuple[object, typer.models.OptionInfo]] = {
    "dataset": (str, DATASET),
    "backbone": (str, typer.Option("resnet18", help="the network the exits are added to, e.g. tiny_cnn, resnet18, "
                                                      "mobilenet_v3_small; see `edgeexit backbones`")),
    "exits": (str, typer.Option("stages", help="stages | full | blocks | eenet:<pareto|golden|fine|linear|quadratic>:<n> "
                                               "| comma-separated block indices")),
    "head": (Optional[str], typer.Option(None, help="exit heads: conv (MSDNet's two-conv classifier) | aep (the "
                                                    "classifier replicated, AEP's) | plain | pool | bnpool (EENet's); "
                                                    "default: pool for --method eenet, else conv")),
    "image_size": (int, typer.Option(32, min=1, max=4096, help="input height and width; each backbone has a smallest")),
    "method": (str, typer.Option("aep", help="aep (AEP's weighted ensemble, Sarti et al., arXiv:2301.12168) | eenet "
                                             "(confidence + cost L_v2, EENets, Demir & Akbas, arXiv:2409.05336) | "
                                             "budget (bi-level gater, Addad et al., HAL hal-04683503)")),
    "weight_mode": (str, typer.Option("unif", help="AEP weights: desc | asc | mix | unif")),
    "lam": (Optional[float], typer.Option(None, "--lam", help="cost weight λ (default: 1 for eenet, 2 for budget)")),
    "gater_features": (str, typer.Option("confidence,entropy", help="budget: the gater's inputs, from "
                                                                    "confidence,margin,entropy")),
    "gater_period": (int, typer.Option(10, min=1, help="budget: network steps per gater step (Addad et al.: 10 on "
                                                       "CIFAR, 100 on ImageNet)")),
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
    # train and build share one set of defaults: short, for a first bundle soon; the AEP paper's recipe is
    # --epochs 100 --lr 1e-4 --schedule constant
    "epochs": (int, typer.Option(3, min=1, help="passes over the training split (early stopping may end sooner); 3 "
                                                "for a first bundle soon, the AEP paper trains 100 at --lr 1e-4 "
                                                "--schedule constant")),
    "batch_size": (int, typer.Option(64, min=1, help="training batch size (per rank under torchrun)")),
    "lr": (float, typer.Option(1e-3, help="Adam learning rate")),
    "schedule": (str, typer.Option("cosine", help="learning rate: cosine (annealed to 0, good for short runs) | "
                                                  "constant (the AEP paper)")),
    "seed": (int, SEED),
    "max_steps": (Optional[int], typer.Option(None, min=1, help="cap on steps per epoch (quick runs)")),
    "limit_train": (Optional[int], typer.Option(None, min=1, help="train on the first N training samples (quick runs)")),
    "limit_val": (Optional[int], typer.Option(None, min=1, help="use the first N validation samples (quick runs)")),
    "limit_test": (Optional[int], typer.Option(None, min=1, help="evaluate on the first N test samples")),
    "distill": (Optional[str], typer.Option(None, help="T,alpha: every early exit also learns from the final exit's "
                                                       "softened answers, (1-alpha)*CE + alpha*T^2*KL (Phuong & "
                                                       "Lampert; IMTA uses 3,0.9); off by default")),
    "gradient_equilibrium": (bool, typer.Option(False, help="rescale the exits' gradients in the shared layers so "
                                                            "that later exits do not dominate them (IMTA); off by "
                                                            "default")),
}


# --help panel of each option, by name, for a command with more than PANELS_FROM options (a short list stays one
# panel). A shared training option not named here goes to "Training".
IN_DATA, IN_MODEL, IN_TRAINING = "Data", "Model", "Training"
IN_CALIBRATION, IN_EXPORT, IN_DEVICE, IN_OUTPUT = "Calibration", "Export", "Device", "Output"
PANELS_FROM = 8
PANELS: dict[str, str] = {
    "dataset": IN_DATA, "image_size": IN_DATA, "limit_train": IN_DATA, "limit_val": IN_DATA, "limit_test": IN_DATA,
    "max_steps": IN_DATA, "seed": IN_DATA,
    "backbone": IN_MODEL, "exits": IN_MODEL, "head": IN_MODEL, "weights": IN_MODEL, "model": IN_MODEL,
    "model_kwargs": IN_MODEL, "prune": IN_MODEL,
    "method": IN_TRAINING, "weight_mode": IN_TRAINING, "lam": IN_TRAINING, "gater_features": IN_TRAINING,
    "gater_period": IN_TRAINING, "freeze_backbone": IN_TRAINING, "unfreeze_after": IN_TRAINING, "epochs": IN_TRAINING,
    "batch_size": IN_TRAINING, "lr": IN_TRAINING, "schedule": IN_TRAINING, "amp": IN_TRAINING,
    "freeze_bn": IN_TRAINING, "sync_bn": IN_TRAINING, "patience": IN_TRAINING, "resume": IN_TRAINING, "adopt": IN_TRAINING,
    "budget": IN_CALIBRATION, "policy": IN_CALIBRATION, "score": IN_CALIBRATION, "recipe": IN_CALIBRATION,
    "threshold": IN_CALIBRATION, "quota": IN_CALIBRATION, "limit": IN_CALIBRATION, "temperature": IN_CALIBRATION,
    "max_drop": IN_CALIBRATION, "latency_first": IN_CALIBRATION, "batch": IN_CALIBRATION,
    "run_dir": IN_EXPORT, "target": IN_EXPORT, "precision": IN_EXPORT, "eval_batch_size": IN_EXPORT,
    "slim": IN_EXPORT, "slim_vectors": IN_EXPORT,
    "device": IN_DEVICE, "profile_device": IN_DEVICE, "backend": IN_DEVICE, "batches": IN_DEVICE,
    "rounds": IN_DEVICE, "calls": IN_DEVICE, "runner": IN_DEVICE, "runner_binary": IN_DEVICE, "etdump": IN_DEVICE,
    "threads": IN_DEVICE, "quiet": IN_OUTPUT, "verbose": IN_OUTPUT, "show": IN_OUTPUT, "json_out": IN_OUTPUT,
    "mode": IN_TRAINING, "out": IN_EXPORT, "split": IN_DATA,
}


def _in_panel(name: str, option, panelled: bool):
    """The option with its --help panel set (a copy: one OptionInfo serves several commands)."""
    panel = PANELS.get(name, IN_TRAINING if name in TRAIN_SHARED else None)
    if not panelled or panel is None or getattr(option, "rich_help_panel", None):
        return option
    option = copy.copy(option)
    option.rich_help_panel = panel
    return option


def options(*groups: dict, **overrides: typer.models.OptionInfo):
    """Give a command the options of `groups` (name -> (type, option); `overrides`: another default or help for
    this command). The command's own signature lists the names only; one that ends in `shared` gets the
    TRAIN_SHARED values as one dict there (edgeexit.options.train_options makes the typed configs of it)."""
    merged = {name: spec for group in (*groups, OUTPUT) for name, spec in group.items()}

    def decorate(fn):
        takes_shared = "shared" in inspect.signature(fn).parameters
        panelled = sum(not isinstance(o, typer.models.ArgumentInfo) for _, o in merged.values()) > PANELS_FROM
        params = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                                    default=_in_panel(name, overrides.get(name, option), panelled))
                  for name, (kind, option) in merged.items()]
        if panelled:  # --help lists the panels in the order of their first option: data first, device last
            order = [IN_DATA, IN_MODEL, IN_TRAINING, IN_CALIBRATION, IN_EXPORT, IN_DEVICE, IN_OUTPUT]
            params.sort(key=lambda p: order.index(p.default.rich_help_panel)
                        if getattr(p.default, "rich_help_panel", None) in order else len(order))

        @functools.wraps(fn)
        def command(**kwargs):
            habits = {name: kwargs.pop(name) for name in (*OUTPUT, *THREADS) if name in kwargs}
            if takes_shared:
                kwargs["shared"] = {name: kwargs.pop(name) for name in TRAIN_SHARED}
            with habits_of_a_command(runs_model="threads" in merged, **habits):
                return fn(**kwargs)

        command.__signature__ = inspect.Signature(params)  # what typer reads: names, types, options
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command
    return decorate


# every command with options: how much it says (edgeexit.chatter); a command that runs a model: its threads
OUTPUT = {
    "quiet": (bool, typer.Option(False, "--quiet", "-q", help="print the result only (and errors): no progress, no "
                                                              "notes")),
    "verbose": (bool, typer.Option(False, "--verbose", "-v", help="also show what torch, onnxscript, ExecuTorch and "
                                                                  "the native runtimes print themselves (warnings, "
                                                                  "cpuinfo and XNNPACK logs), hidden by default")),
}
THREADS = {
    "threads": (Optional[int], typer.Option(None, min=1, help="threads for torch, onnxruntime and ExecuTorch/XNNPACK "
                                                              "(default: one per core); on a machine other jobs share, "
                                                              "about its idle cores (a note says so when it is busy)")),
}


@contextlib.contextmanager
def habits_of_a_command(*, quiet: bool = False, verbose: bool = False, threads: int | None = None,
                        runs_model: bool = False) -> Iterator[None]:
    """What every command does around its work: how much it says, its threads, the note on a busy machine."""
    from edgeexit import chatter
    from edgeexit import threads as pools

    chatter.set_level(quiet=quiet, verbose=verbose)
    if runs_model:
        pools.choose(threads)
        note = pools.competing_load(threads)
        if note:  # on stderr, before the command's own output (and before stderr is captured): stdout stays the result
            chatter.note(note)
    with chatter.hushed():
        yield


BACKEND = typer.Option(None, help=backend_help())  # the names come from the backend registry


# -- each command's own options (name -> (type, option)), in the order --help lists them --------------------
TRAIN = {
    "run_dir": (Path, RUN_DIR),
    "amp": (bool, typer.Option(True, help="mixed precision (float16 autocast + GradScaler) on CUDA")),
    "freeze_bn": (bool, typer.Option(False, help="BatchNorm statistics fixed (fine-tuning with small batches)")),
    "sync_bn": (bool, typer.Option(False, help="SyncBatchNorm across torchrun ranks (CUDA only)")),
    "patience": (int, typer.Option(12, min=1, help="early stopping: epochs without a better validation loss")),
    "resume": (bool, typer.Option(False, help="continue from run-dir/checkpoint.pt, with its settings")),
    "adopt": (bool, typer.Option(False, help="with --resume: go on with the settings given now where they differ from "
                                             "the checkpoint's (learning rate, schedule, batch size, limits...)")),
    **THREADS,
}
PRUNE = {
    "run_dir": (Path, RUN_DIR),
    "mode": (Optional[str], typer.Option(None, help="AEP weight mode desc | asc | mix | unif (default: the training mode)")),
    "limit": (Optional[int], typer.Option(None, min=1, help="use the first N validation samples")),
    "show": (int, typer.Option(10, min=1, help="how many subsets to list")),
    "budget": (Optional[str], typer.Option(None, help="keep the subset with the best early-exit accuracy under this "
                                                      "MACs budget (0.5, 20e6macs) instead of AEP's best ensemble")),
    "model": (Optional[str], AGAIN_MODEL),
    "model_kwargs": (Optional[str], AGAIN_MODEL_KWARGS),
    **THREADS,
}
CALIBRATE = {
    "run_dir": (Path, RUN_DIR),
    "budget": (str, typer.Option("0.6", help="fraction of full MACs (0.6, as build's MACs route), '20e6macs', "
                                             "'5ms@cpu', or a preset name")),
    "policy": (str, typer.Option("search", help="search | fractions | fixed | gater")),
    "score": (Optional[str], typer.Option(None, help="max_softmax (default) | margin | neg_entropy | confidence | gater; "
                                                     "fixed uses confidence, gater the gater's P_k")),
    "recipe": (str, typer.Option("default", help="calibration-set recipe in calibration/recipes (default, quick) "
                                                 "or a path")),
    "threshold": (float, typer.Option(0.5, min=0.0, max=1.0, help="T of the fixed policy (EENet confidence, in [0, 1])")),
    "quota": (str, typer.Option("rounded", help="fractions policy: rounded (round the running total of exits) | msdnet "
                                                "(MSDNet's reference rule: floor each exit's quota, held fixed)")),
    "limit": (Optional[int], typer.Option(None, min=1, help="calibrate on the first N samples of the recipe's split")),
    "temperature": (bool, TEMPERATURE),
    "model": (Optional[str], AGAIN_MODEL),
    "model_kwargs": (Optional[str], AGAIN_MODEL_KWARGS),
    **THREADS,
}
PROFILE = {
    "run_dir": (Path, RUN_DIR),
    "backend": (Optional[str], BACKEND),
    "device": (str, typer.Option("local", help="local | ssh://[user@]host[:port][?python=PATH&identity=KEY"
                                               "&known_hosts=FILE] | adb://SERIAL")),
    "batches": (Optional[str], typer.Option(None, help="batch sizes, e.g. 1,8 (default: 1 and the bundle's largest)")),
    "rounds": (int, typer.Option(30, min=1, help="alternating rounds; each figure is a median over rounds")),
    "calls": (int, typer.Option(3, min=1, help="back-to-back calls per entry and round (their median)")),
    "runner": (Optional[str], typer.Option(None, help="python | cpp (local: python; adb: cpp)")),
    "runner_binary": (Optional[Path], typer.Option(None, help="the C++ runner (edgeexit_runner, built from `edgeexit glue`) "
                                                             "for cpp / adb; adb pushes its shared libraries with it")),
    "etdump": (bool, typer.Option(False, help="ExecuTorch bundles: also per-segment and per-operator times from ETDump")),
    **THREADS,
}
SLIM = {  # export and build: the deployable bundle beside the development one (edgeexit.bundle.slim)
    "slim": (bool, typer.Option(True, "--slim/--no-slim", help="also write the deployable bundle beside the "
                                "development one (BUNDLE-slim): only what the device runs (the .pte, or the ONNX the "
                                "engines are built from), verified like any bundle; ship that one")),
    "slim_vectors": (bool, typer.Option(False, "--slim-vectors", help="keep the test vectors (pte/program.bpte, "
                                        "vectors.npz) in the deployable bundle, for verify() on the device")),
}
EXPORT = {
    "run_dir": (Path, RUN_DIR),
    "target": (str, TARGET),
    "precision": (Optional[str], PRECISION),
    "out": (Optional[Path], typer.Option(None, help="bundle path (default RUN_DIR/bundle); must be absent, empty or "
                                                    "a bundle")),
    "model": (Optional[str], AGAIN_MODEL),
    "model_kwargs": (Optional[str], AGAIN_MODEL_KWARGS),
    **THREADS,
    **SLIM,
}
ENGINES = {
    "bundle": (Path, typer.Argument(..., help="the bundle to build engines for, e.g. RUN/bundle")),
    "out": (Optional[Path], typer.Option(None, help="where the new bundle version goes (default: BUNDLE itself)")),
    "trtexec": (Optional[str], typer.Option(None, help="build with this trtexec (JetPack: /usr/src/tensorrt/bin/trtexec) "
                                                       "instead of TensorRT's Python builder")),
    "workspace_mb": (Optional[int], typer.Option(None, min=1, help="builder workspace limit in MiB")),
    "compute_capability": (Optional[list[str]], typer.Option(None, help="TensorRT-RTX without a GPU: build for this "
                                                                        "compute capability (e.g. 8.6; repeatable)")),
    "flavour": (Optional[str], typer.Option(None, help="tensorrt | tensorrt_rtx (default: tensorrt if importable)")),
    "profile_after": (bool, typer.Option(True, "--profile/--no-profile", help="profile the engines afterwards "
                                                                              "(needs a CUDA device and RUN/bundle)")),
}
EVAL = {
    "bundle": (Path, typer.Argument(..., help="a bundle directory")),
    "backend": (Optional[str], BACKEND),
    "split": (str, typer.Option("test", help="the split of the data the bundle was trained on: test | val | train")),
    "batch_size": (int, typer.Option(64, min=1, help="images per runtime call")),
    "limit": (Optional[int], typer.Option(None, min=1, help="use the first N samples of the split")),
    "json_out": (Optional[Path], typer.Option(None, "--json", help="also write the figures as JSON")),
    **THREADS,
}
BUILD = {
    "target": (str, TARGET),
    "run_dir": (Path, RUN_DIR),
    "temperature": (bool, TEMPERATURE),
    "budget": (Optional[str], typer.Option(None, help="decide on MACs instead of the device: a fraction of full MACs "
                                                       "(0.6), '20e6macs', a preset or 'N ms@cpu'; with --max-drop / "
                                                       "--latency-first: a latency cap, e.g. 3ms@cpu")),
    "max_drop": (Optional[float], typer.Option(None, help="the fastest deployment on the target (exits, thresholds, "
                                                          "where the network ends), timed there, losing at most this "
                                                          "many points of validation accuracy [default: 0.5 when no "
                                                          "--budget is given; MACs budget 0.6 where the search cannot "
                                                          "decide: other methods, int8/fp16, --no-prune, a target not "
                                                          "timed here]")),
    "latency_first": (bool, typer.Option(False, help="choose the deployment from latency measured on the target "
                                                     "(implied by --max-drop; with --budget Nms: most accurate within it)")),
    "batch": (Optional[int], typer.Option(None, min=1, help="latency first: the operating batch size the deployment is "
                                                            "chosen for (default 1)")),
    "policy": (Optional[str], typer.Option(None, help="default: search for aep, fixed (h >= 0.5) for eenet, gater "
                                                      "(P_k >= 0.5) for budget")),
    "score": (Optional[str], typer.Option(None, help="default: max_softmax for aep, confidence for eenet, gater for "
                                                     "budget")),
    "eval_batch_size": (int, typer.Option(64, min=1, help="images per runtime call when the bundle is evaluated")),
    "precision": (Optional[str], PRECISION),
    "prune": (bool, typer.Option(True, help="AEP pruning to the best exit subset (aep method only)")),
    "profile_device": (str, typer.Option("local", help="where to profile: local | ssh://user@host | adb://SERIAL")),
    **THREADS,
    **SLIM,
}
REPORT = {
    "run_dir": (Path, RUN_DIR),
}
COMPARE = {
    "bundle": (Path, typer.Argument(..., help="a bundle directory")),
    "backends": (Optional[str], typer.Option(None, help="comma-separated (default: every backend available here)")),
    "samples": (int, typer.Option(1000, min=0, help="test-split images besides the bundle's test vectors")),
    "tolerance": (Optional[float], typer.Option(None, min=0.0, help="max |Δlogits| (default: by the bundle's precision)")),
    "json_out": (Optional[Path], typer.Option(None, "--json", help="also write the comparison as JSON")),
    **THREADS,
}

PREDICT = {
    "bundle": (Path, typer.Argument(..., help="a bundle directory, e.g. RUN/bundle")),
    "images": (list[Path], typer.Argument(..., help="image files (PNG, JPEG, ...) and folders of them")),
    "backend": (Optional[str], BACKEND),
    "json_out": (bool, typer.Option(False, "--json", help="print the answers as JSON instead of a table")),
    **THREADS,
}
GLUE = {
    "out": (Path, typer.Option(..., help="the folder to copy into: absent, empty, or a previous `edgeexit glue` copy")),
    "what": (str, typer.Option("all", help="executorch (C++ runner) | android (+ executorch) | ios (+ executorch) | "
                                           "jetson | all")),
}
