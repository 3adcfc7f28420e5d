"""Where a profile runs: this machine, a board over SSH (a Jetson, a Raspberry Pi) or a phone over adb.

One code path for all of them (`run_profile`): stage the bundle and the runner on the device, run the runner there,
fetch its JSON, remove what was staged. Only the transport differs:

- `local`: the bundle where it is; the Python runner in a fresh process of this interpreter (so the build's own
  threads, caches and memory do not colour the figures);
- `ssh://[user@]host[:port][?python=PATH&identity=KEY&known_hosts=FILE]`: OpenSSH's `ssh` client; the bundle and a
  copy of the `edgeexit` package (pure Python: the device needs Python >= 3.10 with numpy, pydantic and the backend's
  runtime) go through `tar` into a fresh directory that is removed afterwards;
- `adb://SERIAL`: `adb push` of the bundle and the C++ runner (`edgeexit_runner` built for the phone's ABI with the
  Android NDK, see executorch/README.md of `edgeexit glue`; pass it as `--runner-binary`) with the shared libraries
  it was linked against (`runner_files`), `adb shell` to run it with LD_LIBRARY_PATH set to that folder.

The runner writes the document described in `edgeexit.device_runner` (the C++ runner's `--profile` writes the same).
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgeexit.elf import read_dynamic
from edgeexit.errors import ConfigError, DeviceError

RUN_TIMEOUT_S = 1800  # a profile of a big model on a slow board takes minutes, not hours
CONNECT_TIMEOUT_S = 10

# What may reach ssh's argv or a shell on the device. Nothing starts with '-' (ssh would read an option: the
# `ssh://-oProxyCommand=CMD@host` attack), nothing holds whitespace, quotes, `$`, `;`, `%` (ssh's own token
# expansion) or `=` (an `-o` value). Stricter than OpenSSH, on purpose: these are names, not syntax.
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*\.?")
_PATH = re.compile(r"[A-Za-z0-9_./~+][A-Za-z0-9_./~+-]{0,1023}")  # a path for ssh's -i / -o or the device's python
_SERIAL = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.:-]{0,127}")  # adb serials: R58M12345, emulator-5554, 10.0.0.7:5555
_LIBRARY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}")  # a shared library's file name (libc++_shared.so)
RUNNER_NAME = "edgeexit_runner"  # the runner's name on the device, whatever its name here
GLUE_HINT = "`edgeexit glue --out GLUE --what executorch`, then build it as GLUE/executorch/README.md says"
SSH_FORM = "ssh://[user@]host[:port][?python=PATH&identity=KEY&known_hosts=FILE]"


def _valid(pattern: re.Pattern, value: str, what: str, uri: str, expected: str) -> str:
    if not pattern.fullmatch(value):
        raise ConfigError(f"bad {what} in the device address", got=f"{value!r} in {uri!r}", expected=expected,
                          hint="names and paths only: no leading '-', no spaces, quotes, '=', '%', '$' or ';'")
    return value


# The device's JSON (edgeexit-device-profile/1) is data from another machine: typed and bounded here, the one reader
# of it on the host (a runner that writes NaN, -1 ms or markup gets a DeviceError, never a trusted profile).
DEVICE_FORMAT = "edgeexit-device-profile/1"
MAX_MS = 1e3 * RUN_TIMEOUT_S  # no single call can take longer than the whole run may
MAX_DOC_BYTES = 64 << 20
Ms = Annotated[float, Field(gt=0, le=MAX_MS, allow_inf_nan=False)]  # 0 ms is no measurement (and divides by zero)
Count = Annotated[int, Field(ge=0, le=1_000_000)]
# printable, one line: no C0/C1 controls (a terminal escape from a device would reach the user's terminal)
Text = Annotated[str, Field(max_length=256, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")]
Word = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+-]{1,64}$")]
BatchKey = Annotated[str, Field(pattern=r"^[1-9][0-9]{0,6}$")]
Entry = Annotated[str, Field(pattern=r"^(full|full_repeat|(exit|answer|segment|head|static)[0-9]{1,3})$")]
Step = Annotated[str, Field(pattern=r"^(full|(segment|test|head|static)[0-9]{1,3})$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DeviceInfo(_Strict):
    hostname: Text
    system: Text
    machine: Text
    cpus: Annotated[int, Field(ge=1, le=1 << 16)]
    cpu: Text


class DeviceProfile(_Strict):
    """What a runner measured on the device: per batch size, per entry, one median (ms) per round."""

    format: Literal["edgeexit-device-profile/1"]
    runner: Literal["python", "cpp"]
    runner_location: Annotated[str, Field(max_length=4096, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")] | None = None
    backend: Word
    bundle_checksum: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    device: DeviceInfo
    versions: Annotated[dict[Word, Text], Field(max_length=64)]
    warmup: Count
    rounds: Annotated[int, Field(ge=1, le=1_000_000)]
    calls: Annotated[int, Field(ge=1, le=1_000_000)]
    # how long each figure's untimed calls of its own entry ran before it (edgeexit.timing.PRIME_MS)
    prime_ms: Annotated[float, Field(ge=0, le=1e6, allow_inf_nan=False)] | None = None
    threads: Annotated[int, Field(ge=1, le=4096)] | None = None  # the intra-op pool every model ran on (edgeexit.timing)
    batches: Annotated[dict[BatchKey, Annotated[dict[Entry, Annotated[list[Ms], Field(min_length=1)]],
                                               Field(min_length=1, max_length=4096)]], Field(min_length=1, max_length=64)]
    peak_rss_mb: Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)] | None = None
    # what each entry ran, once, untimed ("segmentK", "testK", "headK", "staticK", "full"): both runners must agree
    executed: Annotated[dict[Entry, Annotated[list[Step], Field(max_length=256)]], Field(max_length=4096)] | None = None

    @model_validator(mode="after")
    def _one_figure_per_round(self) -> "DeviceProfile":
        for b, entries in self.batches.items():
            if "full" not in entries:
                raise ValueError(f"batch {b} has no 'full' entry (the unsplit model)")
            short = sorted(n for n, v in entries.items() if len(v) != self.rounds)
            if short:
                raise ValueError(f"batch {b}: {', '.join(short)} hold other than rounds={self.rounds} figures")
        return self


def validation_summary(err: ValidationError, limit: int = 3) -> str:
    """The first few problems of a pydantic error, one line each: where, what (the value itself never echoed)."""
    lines = [f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in err.errors()[:limit]]
    more = err.error_count() - limit
    return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")


def read_device_profile(data: bytes, where: str = "the device") -> dict:
    """The device's JSON checked against `DeviceProfile`, as a plain dict; a DeviceError for anything else."""
    if len(data) > MAX_DOC_BYTES:
        raise DeviceError(f"the profile from {where} is too large", got=f"{len(data)} bytes",
                          expected=f"<= {MAX_DOC_BYTES} bytes", hint="the runner and this edgeexit differ in version?")
    try:
        raw = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise DeviceError(f"the profile from {where} is not JSON", got=repr(data[:80]),
                          expected="one UTF-8 JSON document", hint=str(err)[:200]) from None
    if not isinstance(raw, dict):
        raise DeviceError(f"the profile from {where} is not a JSON object", got=type(raw).__name__,
                          expected=f"an object of format {DEVICE_FORMAT}", hint="the runner and this edgeexit differ "
                          "in version, or the runner on the device is not edgeexit's")
    if raw.get("format") != DEVICE_FORMAT:
        raise DeviceError("the device's runner speaks another format", got=str(raw.get("format"))[:80],
                          expected=DEVICE_FORMAT, hint="the runner and this edgeexit differ in version")
    try:
        return DeviceProfile.model_validate(raw).model_dump()
    except ValidationError as err:
        raise DeviceError(f"the profile from {where} does not hold what a profile must", got=validation_summary(err),
                          expected=f"{DEVICE_FORMAT}: finite timings > 0 ms, one per round, known keys",
                          hint="profile again; if it persists, the runner on the device is broken or not edgeexit's") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


@dataclass
class RunnerOptions:
    backend: str | None = None
    batches: list[int] = field(default_factory=list)
    rounds: int = 30
    calls: int = 5
    warmup: int = 5
    threads: int | None = None

    def argv(self) -> list[str]:
        out = ["--rounds", str(self.rounds), "--calls", str(self.calls), "--warmup", str(self.warmup)]
        if self.batches:
            out += ["--batches", ",".join(map(str, self.batches))]
        if self.backend:
            out += ["--backend", self.backend]
        if self.threads:
            out += ["--threads", str(self.threads)]
        return out


def _run(argv: list[str], what: str, *, stdin: bytes | None = None, timeout: float = RUN_TIMEOUT_S) -> bytes:
    try:
        res = subprocess.run(argv, input=stdin, capture_output=True, timeout=timeout)
    except FileNotFoundError:
        raise DeviceError(f"{argv[0]} is not installed", got=argv[0], expected="the client on PATH",
                          hint={"ssh": "apt-get install openssh-client", "adb": "install Android's platform-tools"}.get(
                              argv[0], "install it")) from None
    except subprocess.TimeoutExpired:
        raise DeviceError(f"{what} took longer than {timeout:.0f} s", got=" ".join(argv[:3]),
                          hint="check the device is idle, or profile fewer rounds") from None
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()
        raise DeviceError(f"{what} failed", got=err[-600:] or f"exit code {res.returncode}",
                          expected="exit code 0", hint="run it by hand to see the whole output")
    return res.stdout


class Device:
    """One place a bundle can be profiled."""

    uri: str
    runner: str  # "python" or "cpp": which runner this device runs

    def describe(self) -> str:
        return self.uri

    def check(self) -> None:
        """Raise DeviceError unless the device answers."""

    def stage(self, bundle: Path, runner_binary: Path | None) -> str:
        """Put the bundle (and the runner) on the device; returns the bundle's path there."""
        raise NotImplementedError

    def execute(self, argv: list[str]) -> bytes:
        """Run `argv` on the device (the first word is the runner: "python" or "cpp"); its standard output."""
        raise NotImplementedError

    def fetch(self, path: str) -> bytes:
        raise NotImplementedError

    def cleanup(self) -> None:
        """Remove whatever `stage` put on the device."""

    def out_path(self) -> str:
        """Where the runner writes its JSON on the device (inside what `stage` made)."""
        raise NotImplementedError


class LocalDevice(Device):
    def __init__(self, runner: str = "python"):
        self.uri, self.runner = "local", runner
        self._binary: Path | None = None
        self._scratch: str | None = None

    def stage(self, bundle: Path, runner_binary: Path | None) -> str:
        self._binary = runner_binary
        self._scratch = tempfile.mkdtemp(prefix="edgeexit-profile.")
        return str(bundle)

    def out_path(self) -> str:
        return f"{self._scratch}/raw-profile.json"

    def cleanup(self) -> None:
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)
        self._scratch = None

    def execute(self, argv: list[str]) -> bytes:
        return _run(self._command(argv), "the profile runner on this machine")

    def _command(self, argv: list[str]) -> list[str]:
        if argv[0] == "python":
            return [sys.executable, "-m", "edgeexit.device_runner", *argv[1:]]
        return [str(self._binary), argv[1], "--profile", *argv[2:]]  # the C++ runner: BUNDLE --profile [options]

    def fetch(self, path: str) -> bytes:
        return Path(path).read_bytes()


def _package_tar(bundle: Path) -> bytes:
    """bundle/ (its files, links resolved) and runner/edgeexit/ (this package's Python sources) as one tar."""
    import edgeexit

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(bundle.resolve()), arcname="bundle", recursive=True)
        pkg = Path(edgeexit.__file__).parent
        for f in sorted(pkg.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                tar.add(str(f), arcname=f"runner/edgeexit/{f.relative_to(pkg)}", recursive=False)
    return buf.getvalue()


def parse_ssh_uri(uri: str) -> tuple[str | None, str, int | None, dict[str, str]]:
    """(user, host, port, options) of an ssh:// device address, each checked to be a plain name or path."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError as err:  # a bad port, an unclosed IPv6 bracket
        raise ConfigError("not an ssh device address", got=uri, expected=SSH_FORM, hint=str(err)) from None
    if parts.scheme != "ssh" or not parts.hostname or parts.path not in ("", "/") or parts.fragment:
        raise ConfigError("not an ssh device address", got=uri, expected=SSH_FORM,
                          hint="e.g. ssh://nvidia@jetson.local:22?python=/usr/bin/python3")
    if parts.password is not None:
        raise ConfigError("ssh devices use keys, never a password in the address",
                          got=uri.replace(f":{parts.password}@", ":***@", 1), expected=SSH_FORM,
                          hint="pass the key with ?identity=KEY")
    if port == 0:
        raise ConfigError("bad ssh port", got=uri, expected="ssh://host:PORT with PORT 1..65535")
    user = None if parts.username is None else _valid(_USER, parts.username, "user", uri, "a user name: letters, digits, _ . -")
    host = parts.hostname
    try:
        host = str(ipaddress.ip_address(host))
    except ValueError:
        _valid(_HOST, host, "host", uri, "a host name or an IP address")
    try:
        pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ConfigError("bad ssh device options", got=parts.query, expected="python=PATH&identity=KEY&known_hosts=FILE") from None
    query: dict[str, str] = {}
    for key, value in pairs:
        if key not in ("python", "identity", "known_hosts"):
            raise ConfigError("unknown ssh device option", got=key, expected="python, identity, known_hosts",
                              hint="e.g. ssh://nvidia@jetson.local?python=/usr/bin/python3")
        if key in query:
            raise ConfigError("ssh device option given twice", got=key, expected="each option once")
        query[key] = _valid(_PATH, value, f"{key} path", uri, "a path without spaces, quotes, '=', '%' or a leading '-'")
    return user, host, port, query


class SshDevice(Device):
    """A Linux board over OpenSSH: key authentication only (BatchMode), never a password prompt."""

    def __init__(self, uri: str):
        self.uri, self.runner = uri, "python"
        user, host, port, query = parse_ssh_uri(uri)
        self.host = f"{user}@{host}" if user else host
        self.python = query.get("python", "python3")
        self.options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}"]
        if port:
            self.options += ["-p", str(port)]
        if "identity" in query:
            self.options += ["-i", query["identity"], "-o", "IdentitiesOnly=yes"]
        if "known_hosts" in query:
            self.options += ["-o", f"UserKnownHostsFile={query['known_hosts']}", "-o", "StrictHostKeyChecking=yes"]
        self.workdir: str | None = None

    def describe(self) -> str:
        return f"ssh://{self.host}"

    def _ssh(self, command: str, what: str, *, stdin: bytes | None = None, timeout: float = RUN_TIMEOUT_S) -> bytes:
        # `--`: whatever the destination is, ssh reads no option from it (a second lock beside parse_ssh_uri)
        return _run(["ssh", *self.options, "--", self.host, command], what, stdin=stdin, timeout=timeout)

    def check(self) -> None:
        self._ssh(f"{shlex.quote(self.python)} -c 'import numpy, pydantic'", f"connecting to {self.describe()}",
                  timeout=3 * CONNECT_TIMEOUT_S)

    def stage(self, bundle: Path, runner_binary: Path | None) -> str:
        self.workdir = self._ssh("mktemp -d /tmp/edgeexit-profile.XXXXXX", "making a work directory on the device",
                                 timeout=3 * CONNECT_TIMEOUT_S).decode().strip()
        self._ssh(f"tar -x -C {shlex.quote(self.workdir)}", "copying the bundle to the device", stdin=_package_tar(bundle))
        return f"{self.workdir}/bundle"

    def execute(self, argv: list[str]) -> bytes:
        if argv[0] != "python":
            raise ConfigError("ssh devices run the Python runner", got=argv[0], expected="python")
        wd = shlex.quote(self.workdir or ".")
        cmd = (f"cd {wd} && PYTHONPATH={wd}/runner {shlex.quote(self.python)} -m edgeexit.device_runner "
               + " ".join(shlex.quote(a) for a in argv[1:]))
        return self._ssh(cmd, f"the profile runner on {self.describe()}")

    def out_path(self) -> str:
        return f"{self.workdir}/raw-profile.json"

    def fetch(self, path: str) -> bytes:
        return self._ssh(f"cat {shlex.quote(path)}", "fetching the profile", timeout=60)

    def cleanup(self) -> None:
        if self.workdir and self.workdir.startswith("/tmp/edgeexit-profile."):
            try:
                self._ssh(f"rm -rf {shlex.quote(self.workdir)}", "removing the work directory", timeout=60)
            except DeviceError:
                pass  # the device went away: nothing of the user's is left on this side
        self.workdir = None


class AdbDevice(Device):
    """An Android phone over adb, running the C++ runner (not run in this project's tests: no device here)."""

    ROOT = "/data/local/tmp/edgeexit-profile"

    def __init__(self, uri: str):
        serial = uri.removeprefix("adb://")
        if serial:  # empty: adb's only device
            _valid(_SERIAL, serial, "adb serial", uri, "a serial from `adb devices` (letters, digits, . : _ -)")
        self.uri, self.runner, self.serial = uri, "cpp", serial
        self.workdir: str | None = None

    def _adb(self, *args: str, what: str, timeout: float = RUN_TIMEOUT_S) -> bytes:
        return _run(["adb", *(["-s", self.serial] if self.serial else []), *args], what, timeout=timeout)

    def check(self) -> None:
        state = self._adb("get-state", what="asking adb for the device", timeout=30).decode().strip()
        if state != "device":
            raise DeviceError("the phone is not ready", got=state, expected="device", hint="unlock it, allow USB debugging")

    def stage(self, bundle: Path, runner_binary: Path | None) -> str:
        if runner_binary is None:
            raise ConfigError("a phone runs the C++ runner", got="no --runner-binary", expected="edgeexit_runner built "
                              "for the phone", hint=f"build it with the Android NDK: {GLUE_HINT}")
        files = runner_files(Path(runner_binary))  # before anything reaches the phone: a bad binary is refused here
        # the folder's name is the user's, not a name for a shell: only its plain characters go to the phone, and
        # every word of every `adb shell` command is quoted all the same
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", bundle.resolve().name).lstrip(".-") or "bundle"
        self.workdir = wd = f"{self.ROOT}/{name}"
        q = shlex.quote
        self._adb("shell", f"rm -rf {q(wd)} && mkdir -p {q(wd)}", what="preparing the phone")
        self._adb("push", str(bundle.resolve()), f"{wd}/bundle", what="pushing the bundle")
        for remote, local in files:
            self._adb("push", str(local), f"{wd}/{remote}", what=f"pushing {remote}")
        self._adb("shell", f"chmod 755 {q(wd + '/' + RUNNER_NAME)}", what="making the runner executable")
        return f"{wd}/bundle"

    def execute(self, argv: list[str]) -> bytes:
        return self._adb("shell", runner_command(self.workdir or self.ROOT, argv[1], argv[2:]),
                         what="the C++ runner on the phone")

    def out_path(self) -> str:
        return f"{self.workdir}/raw-profile.json"

    def fetch(self, path: str) -> bytes:
        return self._adb("exec-out", f"cat {shlex.quote(path)}", what="fetching the profile", timeout=60)

    def cleanup(self) -> None:
        if self.workdir:
            try:
                self._adb("shell", f"rm -rf {shlex.quote(self.workdir)}", what="cleaning the phone", timeout=60)
            except DeviceError:
                pass
        self.workdir = None


def runner_files(binary: Path) -> list[tuple[str, Path]]:
    """What a device gets to run the C++ runner `binary`, as (name there, file here): the binary (as
    `edgeexit_runner`) and every shared library it needs, directly or through another, that the build did not take
    from the system: one found beside the binary or on the RUNPATH of the file that needs it ($ORIGIN resolved), as
    the executorch wheel's libraries are. A library found in neither (libc, libm, libdl, liblog, libstdc++...) is the
    device's own. The device runs the runner with LD_LIBRARY_PATH set to the folder these went to (`runner_command`),
    so nothing of this machine is needed there. A runner linked statically has nothing beside it, nor has a script;
    a file that is neither an ELF file nor a script is refused."""
    binary = Path(binary)
    if not binary.is_file():
        raise ConfigError("the runner binary does not exist", got=str(binary), expected="a file", hint=GLUE_HINT)
    binary = binary.resolve()
    files: dict[str, Path] = {RUNNER_NAME: binary}
    with binary.open("rb") as f:
        if f.read(2) == b"#!":  # a script (a wrapper of the user's): the device's shell runs it; nothing to follow
            return list(files.items())
    pending, seen = [binary], set()
    while pending:
        needer = pending.pop(0)
        dynamic = read_dynamic(needer)
        dirs = [binary.parent] + [Path(p.replace("${ORIGIN}", "$ORIGIN").replace("$ORIGIN", str(needer.parent)))
                                  for p in dynamic.search]
        for soname in dynamic.needed:
            if soname in seen:
                continue
            seen.add(soname)
            found = next((d / soname for d in dirs if "/" not in soname and (d / soname).is_file()), None)
            if found is None:
                continue  # the system's
            _valid(_LIBRARY, soname, "shared library name", str(needer), "a plain file name (letters, digits, _ . + -)")
            files[soname] = found.resolve()
            pending.append(found.resolve())
    return list(files.items())


def runner_command(workdir: str, bundle: str, args: list[str]) -> str:
    """The shell command that runs the pushed runner's profile in `workdir` (every word quoted): the libraries
    pushed beside it come first on LD_LIBRARY_PATH, before anything the device has."""
    q = shlex.quote
    return (f"cd {q(workdir)} && LD_LIBRARY_PATH={q(workdir)} ./{RUNNER_NAME} {q(bundle)} --profile "
            + " ".join(q(a) for a in args)).rstrip()


def parse_device(uri: str | None, runner: str | None = None) -> Device:
    uri = uri or "local"
    if uri == "local":
        if runner not in (None, "python", "cpp"):
            raise ConfigError("unknown runner", got=runner, expected="python | cpp")
        return LocalDevice(runner or "python")
    if uri.startswith("ssh://"):
        dev: Device = SshDevice(uri)
    elif uri.startswith("adb://"):
        dev = AdbDevice(uri)
    else:
        raise ConfigError("unknown device", got=uri, expected="local | ssh://[user@]host[:port] | adb://SERIAL")
    if runner is not None and runner != dev.runner:
        raise ConfigError(f"{dev.describe()} runs the {dev.runner} runner", got=runner, expected=dev.runner)
    return dev


def runner_backends(runner: str) -> list[str]:
    """The backends a runner runs: the Python runner every registered one, the C++ runner its one runtime's."""
    from edgeexit.runtime.registry import REGISTRY, CPP_RUNNER_FAMILY

    return [n for n, s in REGISTRY.items() if runner != "cpp" or s.family == CPP_RUNNER_FAMILY]


def run_profile(device: Device, bundle: Path, options: RunnerOptions, *, runner_binary: Path | None = None) -> dict:
    """The raw profile of `bundle` measured on `device` (stage, run, fetch, clean up)."""
    if device.runner == "cpp":
        if runner_binary is None:
            raise ConfigError("the C++ runner needs its binary", got="no --runner-binary",
                              expected="edgeexit_runner (the executorch glue)", hint=GLUE_HINT)
        if not Path(runner_binary).is_file():
            raise ConfigError("the runner binary does not exist", got=str(runner_binary), expected="a file")
    try:
        device.check()
        remote = device.stage(Path(bundle), runner_binary)
        allowed = runner_backends(device.runner)
        if options.backend is not None and options.backend not in allowed:
            raise ConfigError(f"the {device.runner} runner runs {' | '.join(allowed)} only", got=options.backend,
                              expected=" | ".join(allowed))
        opts = options if device.runner == "python" else RunnerOptions(None, options.batches, options.rounds,
                                                                       options.calls, options.warmup)
        out = device.out_path()
        device.execute([device.runner, remote, *opts.argv(), "--out", out])
        text = device.fetch(out)
    finally:
        device.cleanup()
    return read_device_profile(text, device.describe())


