"""Any `nn.Module` as an early-exit backbone: the user's own builder (`mypkg.models:build_net`) or a torchvision
model by name (`torchvision:resnet18`), cut at module paths (`layer1,layer2,layer3`).

The model is traced with torch.fx, the named modules kept whole (leaves), and its graph is cut after each named
module's call: segment k runs the nodes between cut k-1 and cut k. A cut is only valid when the named module's
output is the one value that crosses it (parameters are read again where they are used). A skip connection across
it - a value computed before the cut and used after it, such as ResNet's identity branch when the cut falls
inside a residual block - is refused with the connection named.

The segments are `torch.fx.GraphModule`s that share the user's modules and parameters, so running them in turn
replays the model's own operations in its own order: the final exit computes exactly what the model computes.
Tracing happens in eval mode, so `self.training` read inside a forward (functional dropout) is frozen to eval;
modules (nn.Dropout, nn.BatchNorm) keep following train()/eval().
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.fx as fx
import torchvision
from torch import Tensor, nn

from edgeexit.errors import CheckpointError, ConfigError
from edgeexit.models.adapters import Backbone, adapt_in_channels, gap_linear_head

TORCHVISION = "torchvision:"


class SplitError(ConfigError):
    """The model cannot be cut at a named module path."""


@dataclass(frozen=True)
class PassedModel:
    """The `--model` (and `--model-kwargs`) the user passed on the command line of this very command: the only
    place a `package.module:function` to call may come from. A checkpoint's copy of it is never called alone."""

    spec: str
    kwargs: dict | None = None


def is_registered(spec: str | None) -> bool:
    """A model spec edgeexit builds without calling anything a file names: a built-in backbone (None: the adapter
    named by `backbone`, from edgeexit's own registry) or `torchvision:<name>` from torchvision's list."""
    return spec is None or spec.startswith(TORCHVISION)


def check_stored_spec(stored: str | None, stored_kwargs: dict | None, passed: PassedModel | None, *, where: str) -> None:
    """Refuse to rebuild the model a file (`where`) names unless it is a registered builder or the very `--model`
    the user passed again for this command: a checkpoint could otherwise name any importable callable
    (`subprocess:getoutput` with a `cmd=` keyword) and have edgeexit call it."""
    if is_registered(stored):
        if passed is not None and passed.spec != stored:
            raise CheckpointError(f"--model differs from the model {where} was trained with", got=passed.spec,
                                  expected=stored or "no --model (a built-in backbone)",
                                  hint="drop --model: the checkpoint's own model is rebuilt")
        return
    again = f"--model {stored}" + (f" --model-kwargs '{json.dumps(stored_kwargs)}'" if stored_kwargs else "")
    if passed is None:
        raise CheckpointError(f"{where} names its model by a function, which edgeexit calls only when you pass it "
                              "on the command line", got=f"model {stored!r}", expected=f"{again} on this command",
                              hint=f"pass {again} again if you trust that code (edgeexit never calls a function "
                                   "named in a file)")
    if passed.spec != stored:
        raise CheckpointError(f"--model differs from the model {where} was trained with", got=passed.spec,
                              expected=stored, hint=f"pass {again}")
    if passed.kwargs is not None and passed.kwargs != (stored_kwargs or {}):
        raise CheckpointError(f"--model-kwargs differ from those {where} was trained with", got=passed.kwargs,
                              expected=stored_kwargs or {}, hint=f"pass {again}")


def load_builder(spec: str) -> Callable[..., nn.Module]:
    """The function a `--model` spec names: "package.module:function", or "torchvision:<model name>"."""
    if spec.startswith(TORCHVISION):
        name = spec.removeprefix(TORCHVISION)
        if name not in torchvision.models.list_models(module=torchvision.models):
            raise ConfigError("unknown torchvision classification model", got=name,
                              expected="a name from torchvision.models.list_models()", hint="e.g. torchvision:resnet18")
        return getattr(torchvision.models, name)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError("bad --model", got=spec, expected="package.module:function or torchvision:<name>",
                          hint="e.g. --model mypkg.models:build_net --model-kwargs '{\"num_classes\": 10}'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError("cannot import the module of --model", got=f"{module_name}: {err}",
                          expected="a module on the Python path", hint="pip install your package, or set PYTHONPATH") from err
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise ConfigError(f"{module_name} has no {attr}", got=spec, expected="a function returning an nn.Module")
    if not callable(fn):
        raise ConfigError("--model must name a function or class", got=f"{spec}: {type(fn).__name__}")
    return fn


def build_user_model(spec: str, kwargs: dict[str, Any] | None, *, in_channels: int, weights: str | None) -> nn.Module:
    """The user's model, with `weights` loaded (a state_dict or torch.export file). A torchvision
    model's first convolution is adapted to `in_channels` as the built-in adapters do (after loading, so
    RGB weights are summed for grayscale input); a user's own builder gets no such change."""
    kwargs = dict(kwargs or {})
    builder = load_builder(spec)
    try:
        model = builder(**kwargs)
    except TypeError as err:
        raise ConfigError("the --model builder does not take these keyword arguments", got=f"{spec}(**{kwargs}): {err}",
                          expected="the builder's own keyword arguments", hint="--model-kwargs '{\"num_classes\": 10}'") from err
    except Exception as err:  # the user's own code: whatever it raises, say where it came from
        raise ConfigError("the --model builder failed", got=f"{spec}(**{kwargs}): {type(err).__name__}: {err}",
                          expected="a function that returns an nn.Module") from err
    if not isinstance(model, nn.Module):
        raise ConfigError("the --model builder must return an nn.Module", got=f"{spec} -> {type(model).__name__}")
    if weights is not None:
        from edgeexit.models.weights import load_weights

        # the stock torchvision architecture takes the file's layer shapes (a grayscale stem, 10 classes), as the
        # built-in adapters do; a user's own builder must build what the file holds, so that the checkpoint, which
        # rebuilds it without the file, gets the same shapes
        load_weights(model, weights, what=spec, resize=spec.startswith(TORCHVISION))
    if spec.startswith(TORCHVISION):
        _adapt_first_conv(model, in_channels)
    return model


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, adapt_in_channels(module, in_channels))
            return


class _CutTracer(fx.Tracer):
    """The standard fx tracer, with the modules named as split points kept whole."""

    def __init__(self, leaves: Sequence[str]):
        super().__init__()
        self.leaves = set(leaves)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return qualname in self.leaves or super().is_leaf_module(m, qualname)


def trace(model: nn.Module, leaves: Sequence[str] = ()) -> fx.Graph:
    was_training = model.training
    model.eval()
    try:
        return _CutTracer(leaves).trace(model)
    except Exception as err:  # fx raises TraceError, TypeError, ... on control flow it cannot follow
        raise SplitError("torch.fx cannot trace the model", got=f"{type(model).__name__}: {type(err).__name__}: "
                         f"{str(err)[:300]}", expected="a forward without control flow that depends on tensor values",
                         hint="move data-dependent branches out of forward, or wrap them in a module") from err
    finally:
        model.train(was_training)


def _where(node: fx.Node) -> str:
    """A node as a reader knows it: `module path` for a module call, else the op inside its module."""
    if node.op == "call_module":
        return f"module {node.target}"
    if node.op == "placeholder":
        return f"the model's input `{node.target}`"
    stack = list((node.meta.get("nn_module_stack") or {}).values())
    inside = f" in {stack[-1][0]}" if stack and stack[-1][0] else ""
    target = getattr(node.target, "__name__", str(node.target))
    return f"`{target}` ({node.name}){inside}"


def _check_paths(model: nn.Module, paths: Sequence[str]) -> None:
    modules = dict(model.named_modules())
    for p in paths:
        if p not in modules or p == "":
            top = ", ".join(n for n, _ in model.named_children())
            raise SplitError("no module at this split point", got=p, expected="a module path of the model",
                             hint=f"its top-level modules: {top}; nested ones by dots, e.g. layer1.0")
    for a in paths:
        for b in paths:
            if a != b and b.startswith(a + "."):
                raise SplitError("one split point lies inside another", got=f"{b} inside {a}",
                                 expected="module paths that do not contain one another")


def cut_nodes(graph: fx.Graph, paths: Sequence[str]) -> list[fx.Node]:
    """The call node of every split module, in the order the model runs them."""
    calls = {p: [n for n in graph.nodes if n.op == "call_module" and n.target == p] for p in paths}
    for p, nodes in calls.items():
        if not nodes:
            raise SplitError("the split module is never called in forward", got=p,
                             expected="a module the model's forward runs")
        if len(nodes) > 1:
            raise SplitError("the split module runs more than once in forward, so a cut after it is ambiguous",
                             got=f"{p} called {len(nodes)} times", expected="a module called once",
                             hint="split after a module used once, e.g. the block that contains it")
    order = {n: i for i, n in enumerate(graph.nodes)}
    return sorted((calls[p][0] for p in paths), key=order.__getitem__)


def check_cuts(graph: fx.Graph, cuts: Sequence[fx.Node]) -> None:
    """Refuse a cut that a value other than the split module's output crosses (a skip connection)."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    for cut in cuts:
        at = order[cut]
        for node in graph.nodes:
            if order[node] > at or node is cut or node.op == "get_attr":
                continue
            later = [u for u in node.users if order[u] > at]
            if later:
                raise SplitError(
                    f"a skip connection crosses the split point after {cut.target}",
                    got=f"{_where(node)} (computed before the cut) feeds {_where(later[0])} (after it)",
                    expected=f"the output of {cut.target} to be the only value that crosses",
                    hint="split after the whole block that holds both ends of the connection (e.g. layer1 "
                         "or layer1.0 for a ResNet), not inside it")


def _segment(root: nn.Module, graph: fx.Graph, nodes: list[fx.Node], start: fx.Node | None, end: fx.Node) -> fx.GraphModule:
    """The nodes of one segment as a module taking `start`'s value (the model's input when None) and returning
    `end`'s; parameters and buffers are read again where they are used."""
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    inp = g.placeholder("x")
    if start is None:
        env[next(n for n in graph.nodes if n.op == "placeholder")] = inp
    else:
        env[start] = inp

    def arg(n: fx.Node) -> fx.Node:
        if n not in env:  # only get_attr reaches here: check_cuts refused every other crossing value
            env[n] = g.node_copy(n, arg)
        return env[n]

    for n in nodes:
        env[n] = g.node_copy(n, arg)
    g.output(env[end])
    return fx.GraphModule(root, g, class_name="Segment")


def split_graph(model: nn.Module, paths: Sequence[str]) -> tuple[list[fx.GraphModule], list[str]]:
    """`model` cut after each module of `paths`: the segments (the last runs to the model's output) and the cut
    module paths in run order."""
    _check_paths(model, paths)
    graph = trace(model, paths)
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise SplitError("the model's forward must take one input", got=[str(n.target) for n in placeholders],
                         expected="forward(x)")
    output = next(n for n in graph.nodes if n.op == "output")
    result = output.args[0]
    if not isinstance(result, fx.Node):
        raise SplitError("the model must return one tensor of logits", got=f"{type(result).__name__}",
                         expected="forward(x) -> Tensor[B, classes]", hint="wrap it so that forward returns the logits")
    cuts = cut_nodes(graph, paths)
    if result in cuts:
        raise SplitError("a split point is the model's output", got=str(result.target),
                         expected="modules before the one that returns the logits",
                         hint="the final exit is always there; name earlier modules only")
    check_cuts(graph, cuts)
    order = list(graph.nodes)
    index = {n: i for i, n in enumerate(order)}
    # segment k runs the nodes after cut k-1 up to cut k; the last one everything after the last cut (side
    # effects after the logits, such as asserts, included) and returns the logits
    ends = [index[c] for c in cuts] + [index[output] - 1]
    segments, start, prev = [], 0, None
    for k, end_i in enumerate(ends):
        body = [n for n in order[start:end_i + 1] if n.op not in ("placeholder", "output", "get_attr")]
        segments.append(_segment(model, graph, body, prev, cuts[k] if k < len(cuts) else result))
        prev, start = order[end_i], end_i + 1
    return segments, [str(c.target) for c in cuts]


class ClassTokenHead(nn.Module):
    """A transformer exit: LayerNorm, the class token (token 0), one dense layer (ViT's own classifier)."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.norm(x)[:, 0])


def head_for_shape(shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The AEP exit head for features of one sample's `shape`: GAP + dense on feature maps (C, H, W), LayerNorm +
    class token + dense on tokens (N, D), dense on vectors (D,)."""
    if len(shape) == 3:
        return gap_linear_head(shape[0], num_classes)
    if len(shape) == 2:
        return ClassTokenHead(shape[1], num_classes)
    if len(shape) == 1:
        return nn.Linear(shape[0], num_classes)
    raise SplitError("no exit head for features of this shape", got=shape,
                     expected="(C, H, W) feature maps, (tokens, dim) or (dim,)")


def user_backbone(model: nn.Module, paths: Sequence[str], *, name: str, stages: Sequence[int] | None = None) -> Backbone:
    """A Backbone whose blocks are `model` cut after `paths` (the last block runs to the logits, so the final head
    is the identity). `stages` picks the per-stage placement among the cuts (default: every cut)."""
    if not paths:
        raise SplitError("name at least one split point", got="no --exits", expected="module paths, e.g. layer1,layer2",
                         hint="list the model's modules with print(model)")
    segments, order = split_graph(model, paths)
    names = order + ["output"]
    last = len(segments) - 1
    stages = sorted(set(stages or range(len(segments))) | {last})
    return Backbone(name, list(segments), names, stages, gap_linear_head, nn.Identity(),
                    full=list(range(len(segments))), head_for_shape=head_for_shape)


def check_logits(model: nn.Module, in_channels: int, image_size: int, num_classes: int, spec: str) -> None:
    """A clear error unless `model` maps a [2, C, H, W] batch to [2, num_classes] logits."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, in_channels, image_size, image_size))
    except Exception as err:  # the user's forward can raise anything on a wrong input shape
        raise ConfigError("the model does not run on the data's images", got=f"{spec} on [2, {in_channels}, "
                          f"{image_size}, {image_size}]: {type(err).__name__}: {str(err)[:200]}",
                          expected="a model for this number of channels and image size",
                          hint="pass --image-size, or build the model for the data (e.g. --model-kwargs)") from err
    finally:
        model.train(was_training)
    if not isinstance(out, Tensor) or out.shape != (2, num_classes):
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ConfigError("the model's output is not one logit per class", got=f"{spec} -> {got}",
                          expected=f"(2, {num_classes}) for the data's {num_classes} classes",
                          hint=f"--model-kwargs '{{\"num_classes\": {num_classes}}}' (or your builder's own argument)")

