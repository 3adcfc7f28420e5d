"""torch backend: the bundle's own `torch.export` programs (`.pt2`), on the CPU or a CUDA device.

It runs the same bundle as every other backend (not a checkpoint), so `edgeexit compare` checks the lowered files
against the programs they were lowered from. On CUDA the features stay on the device: compaction is an
`index_select` there, and only the per-sample exit flags come back to the host.

A `.pt2` archive (torch.export.save) can make torch run code when loaded: pickled opaque or custom objects
(`data/constants/opaque_obj_*`, `custom_obj_*`), pickled weights and constants (`use_pickle`), the pickled sample
inputs, legacy `.pt` weight files, guard code that `ExportedProgram.module()` compiles, and shape expressions that
the deserializer hands to `sympy.sympify` (an `eval`). torch's zip reader also finds entries case-insensitively
and takes the first entry's folder as the archive's root, so a name check that Python's zipfile agrees with is not
one that torch agrees with. Hence `check_pt2` reads the archive against an ALLOW-LIST, never a deny-list:

- every entry sits in one root folder and its path inside it is exactly one of `ALLOWED` (case-sensitive, so
  `OPAQUE_OBJ_0` or `Models/model.json` is refused), no two names equal once case-folded (torch's reader would
  pick either), no directories, no encryption, at most MAX_ARCHIVE_BYTES in all;
- the weights and constants configs list raw tensors only (`use_pickle` false, `weight_<n>` / `tensor_<n>`
  files that exist), no opaque, custom or legacy objects;
- the program's operators are aten / prims / quantized_decomposed ops or a few `_operator` arithmetic
  functions; it has no custom objects and no guard code; every shape expression is made of symbol names,
  numbers, arithmetic and torch's own sympy functions (no attribute access, no other names).

`load_program` then hands torch an archive REBUILT in memory from the checked bytes (so torch never reads the
file itself: no second look at a file that may have changed, no name torch resolves differently), with the
sample inputs left empty (torch.export.save writes them as a pickle; running a program does not need them) and
torch.load forced to weights_only for good measure. The same two functions serve `--weights` given a
torch.export archive (edgeexit.models.weights).
"""

from __future__ import annotations

import io
import json
import os
import re
import tokenize
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgeexit.bundle import TensorSpec
from edgeexit.bundle.manifest import SegmentRef
from edgeexit.errors import BundleError, EdgeExitError, RuntimeMissingError
from edgeexit.runtime.backend import check_io

SAFE_OP_PREFIXES = ("torch.ops.aten.", "torch.ops.prims.", "torch.ops.quantized_decomposed.")
_OP_NAME = re.compile(r"[A-Za-z0-9_]+\.[A-Za-z0-9_]+")  # "conv2d.default": no deeper attribute chain
# symbolic-size arithmetic torch.export may emit as plain functions; nothing that calls or fetches attributes
SAFE_OPERATORS = frozenset(f"_operator.{f}" for f in (
    "getitem", "add", "sub", "mul", "floordiv", "truediv", "mod", "neg", "pow", "eq", "ne", "lt", "le", "gt", "ge"))

PROGRAM = "models/model.json"
SAMPLE_INPUTS = "data/sample_inputs/model.pt"
WEIGHTS_CONFIG = "data/weights/model_weights_config.json"
CONSTANTS_CONFIG = "data/constants/model_constants_config.json"
_HEADER = ("archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id")
ALLOWED = frozenset({*_HEADER, PROGRAM, SAMPLE_INPUTS, WEIGHTS_CONFIG, CONSTANTS_CONFIG})
PAYLOAD_DIRS = {"data/weights/": re.compile(r"weight_[0-9]{1,9}"), "data/constants/": re.compile(r"tensor_[0-9]{1,9}")}
_CONFIG_DIRS = {WEIGHTS_CONFIG: "data/weights/", CONSTANTS_CONFIG: "data/constants/"}
MAX_JSON_BYTES = 256 << 20
MAX_ARCHIVE_BYTES = 8 << 30  # uncompressed, all entries: read into memory once (zipfile stops at the declared size)

# shape expressions: sympy.sympify evaluates them as Python, so only these tokens may appear
_SYMBOL = re.compile(r"[a-z]{1,8}[0-9]{1,9}")
_SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "True", "False", "positive", "integer", "nonnegative", "real", "finite",
    "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not",
    # torch's own (torch._export.serde.serialize GraphModuleDeserializer.sympy_functions)
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "Mod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "TruncToFloat", "TruncToInt", "RoundToInt", "RoundDecimal", "ToFloat", "Identity"})
_SYMPY_OPS = frozenset({"+", "-", "*", "/", "**", "//", "%", "(", ")", ",", "=", "==", "!=", "<", "<=", ">", ">=", "&", "|", "~"})


def _torch():
    try:
        import torch
    except ImportError as err:
        raise RuntimeMissingError("the torch backend needs torch", expected="torch",
                                  hint="pip install torch==2.14.1, or run the bundle with --backend onnxruntime") from err
    return torch


REFUSED = "holds content that could run code when loaded"
EXPECTED = "a torch.export archive of tensors, JSON and aten/prims operators only (allow-list in edgeexit.runtime.torch_pt2)"
BUNDLE_HINT = "edgeexit writes no such archive; rebuild the bundle from its checkpoint"


class _Refused(Exception):
    """One reason an archive is refused; check_pt2 turns it into the caller's error class."""


def _entries(z: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The archive's entries by their path inside its one root folder, every one on the allow-list."""
    infos = z.infolist()
    if not infos:
        raise _Refused("an empty zip")
    root = infos[0].filename.split("/", 1)[0]  # torch's reader takes the first entry's folder as the root
    if not root or root in (".", "..") or "\\" in root or "\x00" in root:
        raise _Refused(f"a root folder named {root!r}")
    seen: dict[str, str] = {}
    entries: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        folded = name.casefold()  # torch's reader matches names case-insensitively: these would be one entry
        if folded in seen:
            raise _Refused(f"two entries torch reads as one: {seen[folded]!r} and {name!r}")
        seen[folded] = name
        if not name.startswith(root + "/"):
            raise _Refused(f"an entry outside the root folder {root!r}: {name!r}")
        rel = name[len(root) + 1:]
        folder, _, base = rel.rpartition("/")
        pattern = PAYLOAD_DIRS.get(folder + "/")
        if not (rel in ALLOWED or pattern is not None and pattern.fullmatch(base)):
            raise _Refused(f"an entry outside the allow-list: {name!r}")
        if info.is_dir() or info.flag_bits & 0x1:
            raise _Refused(f"a directory or encrypted entry: {name!r}")
        entries[rel] = info
    total = sum(info.file_size for info in infos)
    if total > MAX_ARCHIVE_BYTES:
        raise _Refused(f"{total} bytes uncompressed (at most {MAX_ARCHIVE_BYTES})")
    for required in ("archive_format", "archive_version", PROGRAM, WEIGHTS_CONFIG, CONSTANTS_CONFIG):
        if required not in entries:
            raise _Refused(f"no {required} entry")
    return entries


def _json(z: zipfile.ZipFile, info: zipfile.ZipInfo):
    if info.file_size > MAX_JSON_BYTES:
        raise _Refused(f"{info.filename} of {info.file_size} bytes")
    try:
        return json.loads(z.read(info))
    except (ValueError, RecursionError) as err:
        raise _Refused(f"{info.filename} is not JSON: {str(err)[:120]}") from None


def _check_config(rel: str, config, entries: Mapping[str, zipfile.ZipInfo]) -> None:
    """A weights or constants config: raw tensors in `weight_<n>` / `tensor_<n>` files of the archive only."""
    folder = _CONFIG_DIRS[rel]
    items = config.get("config") if isinstance(config, dict) else None
    if not isinstance(items, dict) or set(config) != {"config"}:
        raise _Refused(f"{rel} is not a payload config")
    for fqn, meta in items.items():
        if not isinstance(meta, dict) or meta.get("use_pickle") is not False or not isinstance(meta.get("tensor_meta"), dict):
            raise _Refused(f"{rel}: {fqn!r} is not a raw tensor (use_pickle must be false)")
        path_name = meta.get("path_name")
        if not isinstance(path_name, str) or not PAYLOAD_DIRS[folder].fullmatch(path_name) or folder + path_name not in entries:
            raise _Refused(f"{rel}: {fqn!r} names the file {path_name!r}")


def _check_expr(expr: str) -> None:
    """A shape expression sympy.sympify may evaluate: symbols, numbers, arithmetic, torch's sympy functions."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(expr).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        raise _Refused(f"a shape expression that does not parse: {expr[:80]!r}") from None
    for tok in tokens:
        ok = (tok.type in (tokenize.NUMBER, tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER)
              or tok.type == tokenize.NAME and (tok.string in _SYMPY_NAMES or _SYMBOL.fullmatch(tok.string))
              or tok.type == tokenize.OP and tok.string in _SYMPY_OPS
              or tok.type == tokenize.STRING and re.fullmatch(r"""(['"])[a-z]{1,8}[0-9]{1,9}\1""", tok.string))
        if not ok:
            raise _Refused(f"a shape expression with {tok.string!r}: {expr[:80]!r}")


def _check_op(target: str) -> None:
    if target in SAFE_OPERATORS:
        return
    prefix = next((p for p in SAFE_OP_PREFIXES if target.startswith(p)), None)
    if prefix is None or not _OP_NAME.fullmatch(target[len(prefix):]):
        raise _Refused(f"the operator {target!r}")


def _check_program(program) -> None:
    """The serialized ExportedProgram: allowed operators, no custom objects, no guard code, safe expressions."""
    if not isinstance(program, dict):
        raise _Refused(f"{PROGRAM} is not an object")
    if program.get("guards_code"):  # compiled and run by ExportedProgram.module()
        raise _Refused("guard code")
    for name in program.get("range_constraints") or {}:
        if not _SYMBOL.fullmatch(str(name)):
            raise _Refused(f"a range constraint on {str(name)[:80]!r}")
    stack = [program]
    while stack:  # iterative: a deeply nested file cannot exhaust the Python stack
        obj = stack.pop()
        if isinstance(obj, list):
            stack.extend(obj)
            continue
        if not isinstance(obj, dict):
            continue
        for key, value in obj.items():
            if "custom_obj" in key and value:  # torchbind / opaque objects: unpickled or constructed by class name
                raise _Refused(f"a custom object ({key})")
            if key in ("target", "as_operator") and isinstance(value, str):
                _check_op(value)
            elif key == "expr_str" and isinstance(value, str):
                _check_expr(value)
            elif isinstance(value, (dict, list)):
                stack.append(value)


def check_pt2(path: Path, *, error: type[EdgeExitError] = BundleError, hint: str = BUNDLE_HINT) -> dict[str, bytes]:
    """The checked records of the `.pt2` at `path` (path inside the root -> bytes), read once; `error` (with
    `hint`) when the archive is not on the allow-list (module docstring) or not a zip at all."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            entries = _entries(z)
            for rel in _CONFIG_DIRS:
                _check_config(rel, _json(z, entries[rel]), entries)
            _check_program(_json(z, entries[PROGRAM]))
            if z.read(entries["archive_format"]) != b"pt2" or z.read(entries["archive_version"]) != b"0":
                raise _Refused("an archive format other than pt2 version 0")
            return {rel: z.read(info) for rel, info in entries.items() if rel not in _HEADER and rel != SAMPLE_INPUTS}
    except _Refused as why:
        raise error(f"{path.name} {REFUSED}", got=str(why), expected=EXPECTED, hint=hint) from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, OSError, EOFError) as err:
        raise error(f"{path.name} is not a torch.export archive", got=f"{type(err).__name__}: {err}",
                    expected="a .pt2 file (torch.export.save)", hint=hint) from err


def _rebuild(records: Mapping[str, bytes]):
    """A fresh in-memory archive of `records` (written by torch's own writer, root folder "archive"), the
    sample inputs empty: torch reads this, never the user's file."""
    torch = _torch()
    buf = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(buf)
    writer.set_min_version(6)
    for rel, data in [("archive_format", b"pt2"), ("archive_version", b"0"), (SAMPLE_INPUTS, b""), *sorted(records.items())]:
        writer.write_record(rel, data, len(data))
    writer.write_end_of_file()
    buf.seek(0)
    return buf


@contextmanager
def _weights_only():
    old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
    os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"  # torch.export.load otherwise falls back to an unrestricted unpickler
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = old


def load_program(path: Path, *, error: type[EdgeExitError] = BundleError, hint: str = "rebuild the bundle"):
    """The ExportedProgram in `path`, loaded from the records `check_pt2` accepted (rebuilt in memory)."""
    torch = _torch()
    path = Path(path)
    records = check_pt2(path, error=error, hint=BUNDLE_HINT if error is BundleError else hint)
    with _weights_only():
        try:
            return torch.export.load(_rebuild(records))
        except Exception as err:  # torch raises many kinds for a damaged archive
            raise error(f"{path.name} could not be loaded as a torch.export program", got=f"{type(err).__name__}: {err}",
                        expected="a .pt2 written by torch.export.save", hint=hint) from err


class TorchSegment:
    def __init__(self, backend: "TorchBackend", path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]):
        torch = _torch()
        program = load_program(path)
        sig = program.graph_signature
        got_in = [s.arg.name for s in sig.input_specs if s.kind == torch.export.graph_signature.InputKind.USER_INPUT]
        if len(got_in) != len(inputs):
            raise BundleError(f"{path.name} takes {len(got_in)} inputs", got=got_in, expected=[i.name for i in inputs],
                              hint="rebuild the bundle")
        meta = [n.meta.get("val") for n in program.graph.nodes if n.op == "output"][0]
        check_io(path, "outputs", outputs, [o.name for o in outputs],
                 [[d if isinstance(d, int) else -1 for d in v.shape] for v in meta])
        self.inputs, self.outputs = tuple(inputs), tuple(outputs)
        self.module = program.module().to(backend.device)
        self._names = [o.name for o in outputs]
        self._torch = torch

    def run(self, feeds: Mapping[str, object]) -> Mapping[str, object]:
        with self._torch.inference_mode():
            outs = self.module(*(feeds[i.name] for i in self.inputs))
        return dict(zip(self._names, outs))


class TorchBackend:
    """torch on the CPU; arrays are torch tensors (sharing memory with numpy on the way in and out)."""

    name = "torch"
    format = "pt2"
    device_name = "cpu"

    def __init__(self, threads: int | None = None):
        from edgeexit.threads import chosen

        self.torch = _torch()
        self.device = self.torch.device(self.device_name)
        self.threads = threads or chosen()  # the command's --threads unless the caller asks for its own
        if self.threads:
            self.torch.set_num_threads(self.threads)

    def open_segment(self, path: Path, ref: SegmentRef, inputs, outputs, max_batch: int) -> TorchSegment:
        return TorchSegment(self, path, inputs, outputs)

    def upload(self, x: np.ndarray):
        return self.torch.from_numpy(x).to(self.device)

    def download(self, a) -> np.ndarray:
        return a.detach().cpu().numpy()

    def empty(self, shape, dtype: str = "float32"):
        return self.torch.empty(tuple(shape), dtype=getattr(self.torch, dtype), device=self.device)

    def exit_flags(self, score, threshold: float) -> np.ndarray:
        return (score >= threshold).cpu().numpy()

    def _index(self, rows: np.ndarray):
        return self.torch.from_numpy(np.ascontiguousarray(rows, np.int64)).to(self.device, non_blocking=True)

    def gather(self, src, rows: np.ndarray, out):
        view = out[: len(rows)]
        self.torch.index_select(src, 0, self._index(rows), out=view)
        return view

    def scatter(self, dst, slots: np.ndarray | None, src, rows: np.ndarray | None) -> None:
        picked = src if rows is None else src[self._index(rows)]
        if slots is None:
            dst[: len(picked)] = picked
        else:
            dst[self._index(slots)] = picked

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def close(self) -> None:
        pass


class TorchCudaBackend(TorchBackend):
    """The same programs on a CUDA device; compaction on the device, only exit flags come back to the host."""

    name = "torch-cuda"
    device_name = "cuda"

    def __init__(self, threads: int | None = None):
        torch = _torch()
        if not torch.cuda.is_available():
            raise RuntimeMissingError("the torch-cuda backend needs a CUDA device", got="none found",
                                      expected="torch.cuda.is_available()", hint="run on a GPU machine, or use --backend torch")
        super().__init__(threads)
