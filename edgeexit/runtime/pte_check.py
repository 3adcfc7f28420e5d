"""A .pte program checked before ExecuTorch loads its methods, for what ExecuTorch's InternalConsistency verification
leaves unchecked and then trusts (the twin of edgeexit/glue/executorch/src/program_check.cpp): a flipped byte in a
re-sealed bundle made ExecuTorch 1.5.1 log "Op index 2049 out of range", load the method anyway and jump through a
null kernel pointer when it ran (SIGSEGV, the Python process gone). Checked here: every index an instruction, a chain
or a plan holds (operators, delegates, values, jump targets) in range, every operator and delegate named, and every
name UTF-8 (the Python bindings log names through Python: one that was not UTF-8 aborted the process).

It reads the flatbuffer by hand (Python's flatbuffers has no verifier and ExecuTorch ships no Python reader of its
schema); every read is bounds-checked, so a damaged buffer is reported, never read past.
"""

from __future__ import annotations

import struct

# union InstructionArguments of ExecuTorch's schema/program.fbs
KERNEL_CALL, DELEGATE_CALL, MOVE_CALL, JUMP_FALSE_CALL, FREE_CALL = 1, 2, 3, 4, 5


class _Damaged(Exception):
    pass


class _Buffer:
    def __init__(self, data: bytes):
        self.data, self.n = data, len(data)

    def _unpack(self, fmt: str, at: int):
        if not 0 <= at <= self.n - struct.calcsize(fmt):
            raise _Damaged(f"an offset ({at}) points outside the program ({self.n} bytes)")
        return struct.unpack_from(fmt, self.data, at)[0]

    def field(self, table: int, index: int) -> int | None:
        """Where field `index` of the table at `table` is stored, or None when absent."""
        vtable = table - self._unpack("<i", table)
        size = self._unpack("<H", vtable)
        if 4 + 2 * index + 2 > size:
            return None
        slot = self._unpack("<H", vtable + 4 + 2 * index)
        return None if slot == 0 else table + slot

    def scalar(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        at = self.field(table, index)
        return default if at is None else self._unpack(fmt, at)

    def ref(self, table: int, index: int) -> int | None:
        """Where an offset field (table, vector, string) of the table points, or None when absent."""
        at = self.field(table, index)
        return None if at is None else at + self._unpack("<I", at)

    def vector(self, at: int | None, width: int) -> list[int]:
        """The element positions of the vector at `at` (empty when absent)."""
        if at is None:
            return []
        length = self._unpack("<I", at)
        if at + 4 + length * width > self.n:
            raise _Damaged(f"a vector of {length} elements runs past the end of the program")
        return list(range(at + 4, at + 4 + length * width, width))

    def raw(self, at: int | None) -> bytes:
        """The bytes of the [ubyte] vector or string at `at` (empty when absent), bounds-checked."""
        positions = self.vector(at, 1)
        return bytes(self.data[positions[0]:positions[-1] + 1]) if positions else b""

    def tables(self, at: int | None) -> list[int]:
        return [p + self._unpack("<I", p) for p in self.vector(at, 4)]

    def ints(self, at: int | None) -> list[int]:
        return [self._unpack("<i", p) for p in self.vector(at, 4)]

    def string(self, at: int | None, what: str = "a name") -> str | None:
        """The string at `at` (None when absent); it must be UTF-8: ExecuTorch's Python bindings log names through
        Python, and a name that is not UTF-8 raised inside its C++ logger and aborted the process."""
        if at is None:
            return None
        raw = self.raw(at)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _Damaged(f"{what} is not UTF-8 ({raw[:40]!r})") from None


def program_bytes(data: bytes) -> bytes:
    """The flatbuffer part of a .pte: up to the extended header's program_size when it has one ("eh00")."""
    if len(data) < 8 or data[4:8] != b"ET12":
        raise _Damaged("no ExecuTorch identifier ET12")
    if len(data) >= 32 and data[8:12] == b"eh00":
        size, segment_base = struct.unpack_from("<QQ", data, 16)
        if not 8 <= size <= len(data) or segment_base > len(data):
            raise _Damaged(f"its header states sizes beyond the file ({size}, {segment_base} of {len(data)} bytes)")
        return data[:size]
    return data


def _check_plan(buf: _Buffer, plan: int, p: int) -> None:
    name = buf.string(buf.ref(plan, 0), f"the name of execution plan {p}")
    if name is None:
        raise _Damaged(f"execution plan {p} has no name")
    where = f"method {name}"
    values = len(buf.vector(buf.ref(plan, 2), 4))
    operators = buf.tables(buf.ref(plan, 6))
    delegates = buf.tables(buf.ref(plan, 7))

    def in_values(indices: list[int], what: str) -> None:
        for i in indices:
            if not 0 <= i < values:
                raise _Damaged(f"{where} {what} names value {i} of {values}")

    in_values(buf.ints(buf.ref(plan, 3)), "input")
    in_values(buf.ints(buf.ref(plan, 4)), "output")
    for op in operators:
        if buf.string(buf.ref(op, 0), f"{where}'s operator name") is None:
            raise _Damaged(f"{where} has an operator without a name")
        buf.string(buf.ref(op, 1), f"{where}'s operator overload")
    for d in delegates:
        if buf.string(buf.ref(d, 0), f"{where}'s delegate id") is None or buf.ref(d, 1) is None:
            raise _Damaged(f"{where} has a delegate without an id or a payload")
    for chain in buf.tables(buf.ref(plan, 5)):
        in_values(buf.ints(buf.ref(chain, 0)), "chain input")
        in_values(buf.ints(buf.ref(chain, 1)), "chain output")
        instructions = buf.tables(buf.ref(chain, 2))
        for n, ins in enumerate(instructions):
            kind, args = buf.scalar(ins, 0, "<B"), buf.ref(ins, 1)
            at = f"instruction {n}"
            if args is None:
                raise _Damaged(f"{where} {at} has no arguments")
            if kind == KERNEL_CALL:
                op = buf.scalar(args, 0, "<i")
                if not 0 <= op < len(operators):
                    raise _Damaged(f"{where} {at} calls operator {op} of {len(operators)}")
                in_values(buf.ints(buf.ref(args, 1)), f"{at} argument")
            elif kind == DELEGATE_CALL:
                d = buf.scalar(args, 0, "<i")
                if not 0 <= d < len(delegates):
                    raise _Damaged(f"{where} {at} calls delegate {d} of {len(delegates)}")
                in_values(buf.ints(buf.ref(args, 1)), f"{at} argument")
            elif kind == MOVE_CALL:
                in_values([buf.scalar(args, 0, "<i"), buf.scalar(args, 1, "<i")], f"{at} move")
            elif kind == JUMP_FALSE_CALL:
                in_values([buf.scalar(args, 0, "<i")], f"{at} condition")
                target = buf.scalar(args, 1, "<i")
                if not 0 <= target < len(instructions):
                    raise _Damaged(f"{where} {at} jumps to instruction {target}")
            elif kind == FREE_CALL:
                in_values([buf.scalar(args, 0, "<i")], f"{at} free")
            else:
                raise _Damaged(f"{where} {at} has an unknown kind {kind}")


def _xnnpack_strings(payload: bytes, where: str) -> None:
    """The strings of an XNNPACK delegate payload (its graph's version, the named keys of its constant data) are
    UTF-8: XNNPACK's compiler logs a named key it cannot find, through the same Python bridge (a flipped key byte
    aborted the process)."""
    if payload[4:8] == b"XH00" and len(payload) >= 18:  # the XNNPACK header: flatbuffer offset and size
        offset, size = struct.unpack_from("<II", payload, 10)
        if offset + size > len(payload):
            raise _Damaged(f"{where}'s XNNPACK header states a graph beyond its payload")
        payload = payload[offset:offset + size]
    if payload[4:8] != b"XN01":
        raise _Damaged(f"{where} is not an XNNPACK graph (identifier {payload[4:8]!r})")
    graph = _Buffer(payload)
    root = graph._unpack("<I", 0)
    graph.string(graph.ref(root, 0), f"{where}'s graph version")
    for constant in graph.tables(graph.ref(root, 8)):  # constant_data: [ConstantDataOffset]
        graph.string(graph.ref(constant, 2), f"{where}'s constant key")


def _check_delegates(data: bytes, buf: _Buffer, root: int, plans: list[int]) -> None:
    """Every XNNPACK delegate's payload (a segment after the program, or inline data) checked by _xnnpack_strings."""
    segment_base = struct.unpack_from("<Q", data, 24)[0] if len(data) >= 32 and data[8:12] == b"eh00" else 0
    segments = [(buf.scalar(t, 0, "<Q"), buf.scalar(t, 1, "<Q")) for t in buf.tables(buf.ref(root, 4))]
    inline = buf.tables(buf.ref(root, 3))
    for plan in plans:
        for d in buf.tables(buf.ref(plan, 7)):
            if buf.string(buf.ref(d, 0)) != "XnnpackBackend":
                continue  # another backend's payload is that backend's business (the runner then refuses it)
            ref = buf.ref(d, 1)
            location, index = buf.scalar(ref, 0, "<b"), buf.scalar(ref, 1, "<I")
            where = f"XNNPACK delegate data {index}"
            if location == 1:  # SEGMENT
                if index >= len(segments):
                    raise _Damaged(f"{where} names segment {index} of {len(segments)}")
                offset, size = segments[index]
                start = segment_base + offset
                if start + size > len(data):
                    raise _Damaged(f"{where} lies beyond the end of the file")
                _xnnpack_strings(data[start:start + size], where)
            else:  # INLINE: Program.backend_delegate_data[index].data
                if index >= len(inline):
                    raise _Damaged(f"{where} names inline data {index} of {len(inline)}")
                _xnnpack_strings(buf.raw(buf.ref(inline[index], 0)), where)


def pte_problem(data: bytes) -> str | None:
    """What in the .pte `data` ExecuTorch would trust and crash on, or None."""
    try:
        buf = _Buffer(program_bytes(data))
        root = buf._unpack("<I", 0)
        plans = buf.tables(buf.ref(root, 1))
        if not plans:
            return "it has no execution plan"
        for p, plan in enumerate(plans):
            _check_plan(buf, plan, p)
        _check_delegates(data, buf, root, plans)
    except _Damaged as err:
        return str(err)
    except struct.error:
        return "an offset points outside the file"
    return None
