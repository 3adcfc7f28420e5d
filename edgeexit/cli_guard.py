"""The one top-level handler of the command line: every command's failure ends as a message and an exit code.

    EdgeExitError (bad input)                    -> its `what | got | expected | hint`, exit code 2
    torch & co. missing (a runtime-only install) -> the same, naming the build extra, exit code 2
    OSError (disk full, permission, a file where
    a folder belongs...), MemoryError            -> the same four parts, exit code 3 (the machine, not the input)
    anything else                                -> one line saying it is a bug in edgeexit, then the traceback

It is the click group of the typer app (`typer.Typer(cls=GuardedGroup)`), so it holds for `edgeexit ...`,
`python -m edgeexit ...` and typer's CliRunner alike, for every command, including the ones added later.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException  # typer's own click: usage errors, bad parameters

from edgeexit.errors import EdgeExitError, RuntimeMissingError

USER_ERROR = 2  # bad input: options, files, data
ENVIRONMENT_ERROR = 3  # the machine refused: disk full, permission, out of memory

# errno -> (what failed, what was expected, hint); the got part is the path and the system's own words
_OS_ERRORS = {
    errno.ENOSPC: ("no space left on the device", "free space for the files this command writes",
                   "free some space or use another --run-dir; edgeexit writes to a temporary file and renames it, so "
                   "the files written before are unchanged"),
    errno.EDQUOT: ("disk quota exceeded", "room within the quota for the files this command writes",
                   "free some space or use another --run-dir; the files written before are unchanged"),
    errno.EFBIG: ("a file is larger than this system or its limits allow", "a file size within the limit",
                  "raise the file-size limit (ulimit -f) or write elsewhere; the files written before are unchanged"),
    errno.EACCES: ("permission denied", "a path this user may read and write",
                   "check the path's owner and mode, or use another --run-dir / --out"),
    errno.EPERM: ("operation not permitted", "a path this user may read and write",
                  "check the path's owner and mode, or use another --run-dir / --out"),
    errno.EROFS: ("the file system is read-only", "a writable file system", "use another --run-dir / --out"),
    errno.EEXIST: ("a file is in the way where a folder must go", "a folder, or a path that does not exist yet",
                   "a run directory (--run-dir) or bundle (--out) is a folder; pick another path or move the file"),
    errno.ENOTDIR: ("a path goes through a file where a folder must be", "every parent of the path to be a folder",
                    "a run directory (--run-dir) or bundle (--out) is a folder; pick another path or move the file"),
    errno.EISDIR: ("a folder is where a file must go", "a file path", "pass the path of a file, not of a folder"),
    errno.ENOENT: ("a file or folder does not exist", "an existing path", "check the path"),
    errno.ENAMETOOLONG: ("a path is too long", "a shorter path", "use a shorter --run-dir / --out"),
}


def os_error_message(err: OSError) -> EdgeExitError:
    """An OSError as the four-part message: what failed | got (path and the system's words) | expected | hint."""
    what, expected, hint = _OS_ERRORS.get(err.errno, ("the operating system refused a file operation",
                                                      "a readable and writable path with free space",
                                                      "check the path, its permissions and the free space"))
    path = " -> ".join(str(p) for p in (err.filename, err.filename2) if p is not None)
    reason = err.strerror or type(err).__name__
    return EdgeExitError(what, got=f"{path}: {reason}" if path else f"[Errno {err.errno}] {reason}",
                         expected=expected, hint=hint)


def out_of_memory(err: BaseException) -> bool:
    """MemoryError, and torch's ways of saying the same: torch.OutOfMemoryError (CUDA), the CPU allocator's error."""
    return isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError" or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


def memory_error_message(err: BaseException) -> EdgeExitError:
    first = str(err).strip().splitlines()[0][:200] if str(err).strip() else ""
    return EdgeExitError("out of memory", got=f"{type(err).__name__}{': ' + first if first else ''}",
                         expected="a model, batch and data set that fit this machine's memory",
                         hint="lower --batch-size, --image-size or the --limit-* options, or use a larger machine")


# What a runtime-only install (`pip install edgeexit`) leaves out: the build side, `pip install 'edgeexit[build]'`
BUILD_MODULES = ("torch", "torchvision", "onnx", "onnxscript", "matplotlib")


def build_side_missing(err: ImportError) -> EdgeExitError | None:
    """A command that trains, exports, evaluates on a data set or plots, run where only the runtime is installed:
    the four-part message naming the extra to install (None for any other import error, which is a bug)."""
    name = (getattr(err, "name", None) or "").split(".")[0]
    if name not in BUILD_MODULES:
        return None
    return RuntimeMissingError(
        f"this command needs edgeexit's build side ({name}), which this install does not have",
        got=f"no module named {name!r}", expected="edgeexit installed with its build extra",
        hint="pip install 'edgeexit[build]' (from a checkout: pip install -e '.[build]'); a runtime-only install runs "
             "bundles: predict, profile, engines, compare --samples 0 and the device runner")


def _print(err: EdgeExitError) -> None:
    # stderr, no line breaks inside paths; escaped: a path may hold [brackets] rich would take for markup
    Console(stderr=True).print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)


class GuardedGroup(TyperGroup):
    """The typer app's group: runs the chosen command and turns its failure into a message and an exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, TyperException):
            raise  # exit codes and usage errors: typer/click print them and set the exit code
        except EdgeExitError as err:  # one a command did not catch itself
            _print(err)
            raise typer.Exit(USER_ERROR) from None
        except OSError as err:
            if err.errno == errno.EPIPE:
                raise  # `edgeexit ... | head`: click ends quietly when the reader goes away
            _print(os_error_message(err))
            raise typer.Exit(ENVIRONMENT_ERROR) from None
        except Exception as err:
            missing = build_side_missing(err) if isinstance(err, ImportError) else None
            if missing is not None:
                _print(missing)
                raise typer.Exit(USER_ERROR) from None
            if out_of_memory(err):
                _print(memory_error_message(err))
                raise typer.Exit(ENVIRONMENT_ERROR) from None
            # not the user's input nor the machine: a bug, whose traceback follows this line
            print(f"internal error: this is a bug in edgeexit, please report it with the traceback below "
                  f"({type(err).__name__}: {str(err)[:200]})", file=sys.stderr, flush=True)
            raise
