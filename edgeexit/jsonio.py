"""JSON that survives infinities (thresholds are ±inf) and is written atomically, through temporary directories
that prove they are edgeexit's own.

A writer works in `.NAME.tmp-PID-TOKEN/` beside its target, and that directory holds a marker naming the same pid
and random token. Only a directory that carries its own matching marker, whose writer is dead, is ever cleaned up:
a user's `.notes.tmp` file, or a folder that merely looks like ours, is never touched.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

WRITER_MARK = ".edgeexit-writer"  # inside every temporary directory: {"pid": ..., "token": ...}
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.tmp-(?P<pid>[0-9]{1,10})-(?P<token>[0-9a-f]{32})$")


def to_jsonable(obj: Any) -> Any:
    """`obj` with numpy / torch scalars and arrays as Python values and ±inf / NaN as "inf" / "-inf" / "nan"."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else str(obj)  # "inf", "-inf", "nan"
    if isinstance(obj, dict):
        return {k: to_jsonable(v) for k, v in obj.items()}
    if hasattr(obj, "model_dump"):  # pydantic models (the manifest's parts)
        return to_jsonable(obj.model_dump(mode="json"))
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch arrays and scalars
        return to_jsonable(obj.tolist())
    return obj


def from_jsonable(obj: Any) -> Any:
    """Inverse of `to_jsonable` for floats: the strings "inf", "-inf" and "nan" become floats again."""
    if isinstance(obj, dict):
        return {k: from_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_jsonable(v) for v in obj]
    if isinstance(obj, str) and obj in ("inf", "-inf", "nan"):
        return float(obj)
    return obj


def dumps(obj: Any) -> str:
    return json.dumps(to_jsonable(obj), indent=2, allow_nan=False)


def _marker(pid: int, token: str) -> str:
    return json.dumps({"writer": "edgeexit", "pid": pid, "token": token}, sort_keys=True) + "\n"


def make_temp_dir(parent: Path, name: str) -> Path:
    """A fresh `parent/.NAME.tmp-PID-TOKEN/` (mode 0700) holding the marker that proves it is this writer's."""
    token = secrets.token_hex(16)
    tmp = Path(parent) / f".{name}.tmp-{os.getpid()}-{token}"
    tmp.mkdir(mode=0o700)
    (tmp / WRITER_MARK).write_text(_marker(os.getpid(), token))
    return tmp


def drop_marker(done: Path) -> None:
    """Remove the writer's marker once the directory has become what it was written for (a bundle version)."""
    (Path(done) / WRITER_MARK).unlink()


def dead_writers_mark(path: Path) -> bool:
    """Whether `path` is a writer marker of ours whose writer died (left in a directory renamed just before)."""
    try:
        mark = json.loads(Path(path).read_text())
        pid, token = mark["pid"], mark["token"]
        ok = isinstance(pid, int) and isinstance(token, str) and Path(path).read_text() == _marker(pid, token)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return False
    return ok and pid != os.getpid() and not _pid_alive(pid)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's live process, or a pid we cannot ask about: keep its files
    return True


def own_dead_temp(p: Path) -> bool:
    """Whether `p` is a temporary directory of an edgeexit writer that died: the name's pid and token match the
    marker inside, and that pid is gone. Anything else (a user's file or folder of a similar name) is not ours."""
    m = _TEMP_NAME.match(p.name)
    if m is None or p.is_symlink() or not p.is_dir():
        return False
    try:
        mark = (p / WRITER_MARK).read_text()
    except (OSError, UnicodeDecodeError):
        return False
    pid = int(m["pid"])
    return mark == _marker(pid, m["token"]) and pid != os.getpid() and not _pid_alive(pid)


def clean_dead_temps(parent: Path, name: str = "*") -> list[Path]:
    """Remove the temporary directories (of target `name`, or of any target) that dead edgeexit writers left in
    `parent`; returns what was removed."""
    removed = []
    for p in Path(parent).glob(f".{name}.tmp-*"):
        if own_dead_temp(p):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write into a temporary directory of ours beside `path`, fsync, then rename over it: readers never see half a
    file, and a writer that dies leaves only a directory that the next run can prove is a dead writer's."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    tmpdir = make_temp_dir(path.parent, path.name)
    tmp = tmpdir / "data"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fchmod(f.fileno(), 0o666 & ~_umask())  # created 0600; respect the user's umask
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, dumps(obj) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())
