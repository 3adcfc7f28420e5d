"""--threads: one setting for every thread pool a command runs a model on, and the warning when other jobs compete
for the cores.

    torch                intra-op threads (torch.set_num_threads; OMP_NUM_THREADS for a torch not imported yet)
    onnxruntime          the process's one global intra-op pool (edgeexit.ort_session), export's checks included
    ExecuTorch/XNNPACK   its threadpool, reset when the executorch backend opens (edgeexit.runtime.executorch_rt)
    child processes      OMP_NUM_THREADS / MKL_NUM_THREADS in the environment they inherit

The backends take `threads=` as before; left unset, they use `chosen()`. Why the warning: torch's and XNNPACK's
worker threads spin while they wait for one another, so on cores that other jobs also use, a pool as large as the
machine loses most of its time (a 3-epoch build took 84 min beside three other jobs, 25 min alone on the same
machine); a pool that fits the idle cores does not.
"""

from __future__ import annotations

import os
import sys

_state: dict[str, int | None] = {"threads": None}
BUSY = 0.5  # the share of the cores other jobs keep busy (1-minute load average) from which we warn


def cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's CPU set)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS has no affinity mask
        return os.cpu_count() or 1


def chosen() -> int | None:
    """The --threads of this command; None: each library's default (as many threads as cores)."""
    return _state["threads"]


def choose(threads: int | None) -> None:
    """Use `threads` threads in torch, onnxruntime, ExecuTorch and child processes from now on (None: defaults)."""
    _state["threads"] = threads
    if not threads:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)  # torch reads it when it starts its pool; children inherit it
    if "torch" in sys.modules:  # already started (tests, a library caller): set it directly
        sys.modules["torch"].set_num_threads(threads)
    from edgeexit.ort_session import pool_threads, session_options

    if pool_threads() is None:  # onnxruntime's global pool takes its size once, at the first session's options
        session_options(threads)


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - not on every platform
        return None


def competing_load(threads: int | None, *, load: float | None = None, ncores: int | None = None) -> str | None:
    """A note when other jobs keep the cores busy (1-minute load average at or above BUSY x cores) and the thread
    count asked for (all cores by default) does not fit the idle ones; None otherwise."""
    load = load_average() if load is None else load
    ncores = ncores or cores()
    if load is None or load < BUSY * ncores:
        return None
    idle = max(1, int(ncores - load + 0.5))
    if threads is not None and threads <= idle:
        return None
    return (f"the load average is {load:.1f} on {ncores} cores: other jobs compete for them, and the thread pools "
            f"of torch and the runtimes spin while they wait, which can make this several times slower; pass "
            f"--threads {idle} (about the idle cores), or run it when the machine is quieter")
