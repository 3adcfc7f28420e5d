"""How much a command says: its result always, its progress unless --quiet, the third-party chatter only with
--verbose.

Chatter is what the libraries under edgeexit print on their own: torch.export / onnxscript / ExecuTorch / torchao
UserWarnings and FutureWarnings, torch's glog-style `W1205 ...] ...` lines, cpuinfo's and ExecuTorch's native
`[cpuinfo_utils.cpp:71] ...` lines, XNNPACK's `Warning in XNNPACK: ...`. Native code writes to file descriptor 2
directly, past Python's sys.stderr, so `hushed()` points descriptor 2 at a temporary file for the whole command
(child processes inherit it) and afterwards writes back every line that is not chatter: edgeexit's own notes and
anything unknown still reach the terminal, only after the command. When the command fails unexpectedly (a bug,
not a user's mistake), everything captured is written back, chatter included, since it may explain the failure.

    progress (say, rule, the training bar)   normal and --verbose     rich's global console, silenced by --quiet
    notes (note: a busy machine)             normal and --verbose     stderr, before the command runs
    the result                               always                   the command's own console (edgeexit.cli)
    errors                                   always                   stderr (edgeexit.cli_guard)
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import warnings
from typing import Iterator

from edgeexit.errors import ConfigError, EdgeExitError

QUIET, NORMAL, VERBOSE = "quiet", "normal", "verbose"
_state = {"level": NORMAL}

# A Python warning as `warnings` prints it: "path:line: Category: message", then indented source lines
_WARNING = re.compile(r"^(?P<path>.+?):\d+: (?:\w+\.)*\w*Warning: ")
_CHATTER = [
    re.compile(r"^[WI]\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ \S+\] "),  # torch's glog-style log lines (warnings, info)
    re.compile(r"^\[[\w./-]+\.(?:cpp|cc|c|h|hpp|mm)(?::\d+)?\] "),  # cpuinfo and other native logs: [file.cpp:71] ...
    re.compile(r"^[DIW] \d\d:\d\d:\d\d\.\d+ executorch:"),  # ExecuTorch's ET_LOG (debug, info, warning)
    re.compile(r"^(?:Debug|Info|Warning) in XNNPACK: "),
]


def level() -> str:
    return _state["level"]


def set_level(*, quiet: bool = False, verbose: bool = False) -> None:
    """Set how much this process says: progress off with `quiet`, chatter on with `verbose`."""
    if quiet and verbose:
        raise ConfigError("--quiet and --verbose contradict each other", got="both", expected="at most one",
                          hint="--quiet prints the result only; --verbose adds the libraries' own warnings and logs")
    import rich

    _state["level"] = QUIET if quiet else VERBOSE if verbose else NORMAL
    rich.get_console().quiet = quiet  # say(), rule() and the training bar (rich's default console)
    if not verbose and not _state.get("filtered"):
        _state["filtered"] = True
        # in-process too, where sys.stderr is not descriptor 2 (typer's CliRunner): third-party warnings ignored,
        # edgeexit's own (e.g. CalibrationWarning) kept
        warnings.filterwarnings("ignore", module=r"(?!edgeexit)")


def say(*objects, **kwargs) -> None:
    """A progress line: shown unless --quiet."""
    import rich

    rich.get_console().print(*objects, **kwargs)


def note(text: str) -> None:
    """A note about the run (e.g. a busy machine) on stderr, so that stdout stays the result; silenced by --quiet."""
    if level() == QUIET:
        return
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[yellow]note:[/] {escape(text)}", soft_wrap=True)


def rule(title: str = "") -> None:
    """A progress heading: shown unless --quiet."""
    import rich

    rich.get_console().rule(title)


def is_chatter(line: str) -> bool:
    return any(p.match(line) for p in _CHATTER)


def drop_chatter(text: str) -> str:
    """`text` without third-party warnings (with their source lines) and native log lines; the rest as it was."""
    own = os.path.dirname(os.path.abspath(__file__)) + os.sep
    kept, in_warning = [], False
    for line in text.splitlines(keepends=True):
        if in_warning and line[:1] in (" ", "\t"):
            continue  # the source line under a dropped warning
        in_warning = False
        m = _WARNING.match(line)
        if m and not os.path.abspath(m.group("path")).startswith(own):
            in_warning = True
            continue
        if not is_chatter(line):
            kept.append(line)
    return "".join(kept)


def _expected(err: BaseException) -> bool:
    """A failure the command reports itself (a user's mistake, an exit code, a usage error): no bug to explain."""
    import click

    return isinstance(err, (EdgeExitError, click.exceptions.Exit, click.ClickException, click.Abort,
                            KeyboardInterrupt))


@contextlib.contextmanager
def hushed() -> Iterator[None]:
    """Descriptor 2 into a temporary file while the block runs, unless --verbose; what is not chatter is written back
    afterwards (everything, when the block fails unexpectedly)."""
    if level() == VERBOSE:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 to redirect (a closed or odd stderr): say everything
        yield
        return
    failed = False
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException as err:
            failed = not _expected(err)
            raise
        finally:
            with contextlib.suppress(OSError, ValueError):
                sys.stderr.flush()  # Python's buffered writes belong to the block
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode(errors="replace")
            kept = text if failed else drop_chatter(text)
            if kept:
                with contextlib.suppress(OSError, ValueError):
                    sys.stderr.write(kept)
                    sys.stderr.flush()
