"""The dynamic section of an ELF file (a runner or a shared library, of any architecture): which shared libraries it
needs (DT_NEEDED) and where it asks the loader to look for them (DT_RUNPATH, or the older DT_RPATH).

Read here rather than with `readelf` or `ldd`: the runner for a phone is an ARM binary that this machine cannot
load, and binutils need not be installed where a bundle is profiled. Only the section headers and the dynamic
section's string table are read; a file that does not hold them gets a ConfigError, never a guess.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from edgeexit.errors import ConfigError

SHT_DYNAMIC = 6
DT_NULL, DT_NEEDED, DT_RPATH, DT_RUNPATH = 0, 1, 15, 29


@dataclass(frozen=True)
class Dynamic:
    needed: list[str] = field(default_factory=list)  # sonames, in the file's order
    search: list[str] = field(default_factory=list)  # DT_RUNPATH (else DT_RPATH) entries, "$ORIGIN" unexpanded


def _bad(path: Path, why: str) -> ConfigError:
    return ConfigError("not an ELF file edgeexit can read", got=f"{path}: {why}",
                       expected="an executable or shared library built for the device (ELF, with section headers)",
                       hint="pass the edgeexit_runner that CMake built, not a script or a stripped copy")


def read_dynamic(path: Path) -> Dynamic:
    """The libraries `path` needs and its library search path; empty for a statically linked file."""
    data = Path(path).read_bytes()
    if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        raise _bad(path, "no ELF header")
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"

    def unpack(fmt: str, offset: int) -> tuple:
        size = struct.calcsize(order + fmt)
        if offset < 0 or offset + size > len(data):
            raise _bad(path, f"a structure at byte {offset} runs past the end of the file")
        return struct.unpack_from(order + fmt, data, offset)

    shoff, shentsize, shnum = (unpack("Q", 0x28)[0], *unpack("HH", 0x3A)) if wide else \
        (unpack("I", 0x20)[0], *unpack("HH", 0x2E))
    header = "IIQQQQIIQQ" if wide else "IIIIIIIIII"  # name, type, flags, addr, offset, size, link, info, align, entsize
    if shnum == 0 or shentsize < struct.calcsize(order + header):
        raise _bad(path, "no section headers")
    sections = [unpack(header, shoff + i * shentsize) for i in range(shnum)]
    dynamic = [s for s in sections if s[1] == SHT_DYNAMIC]
    if not dynamic:
        return Dynamic()  # statically linked: nothing to find
    _, _, _, _, offset, size, link, *_ = dynamic[0]
    if link >= shnum:
        raise _bad(path, "the dynamic section names no string table")
    strtab, strsize = sections[link][4], sections[link][5]

    def string(at: int) -> str:
        if at >= strsize:
            raise _bad(path, "a dynamic entry points past its string table")
        end = data.find(b"\0", strtab + at, strtab + strsize)
        if end < 0:
            raise _bad(path, "an unterminated string in the dynamic string table")
        return data[strtab + at:end].decode("utf-8", errors="replace")  # a bad name fails the name check

    entry = "qQ" if wide else "iI"
    needed, runpath, rpath = [], [], []
    for at in range(offset, offset + size, struct.calcsize(order + entry)):
        tag, value = unpack(entry, at)
        if tag == DT_NULL:
            break
        if tag == DT_NEEDED:
            needed.append(string(value))
        elif tag in (DT_RUNPATH, DT_RPATH):
            (runpath if tag == DT_RUNPATH else rpath).extend(p for p in string(value).split(":") if p)
    return Dynamic(needed, runpath or rpath)  # the loader ignores DT_RPATH when DT_RUNPATH is present
