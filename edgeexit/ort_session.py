"""onnxruntime sessions of this process, shared by the runtime (its onnxruntime backend) and export (which checks
each ONNX file against torch): one global intra-op thread pool, so that both go through the same options."""

from __future__ import annotations

from edgeexit.errors import RuntimeMissingError

_pool: dict[str, int | None] = {}  # the one global thread pool of this process, once set


def onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:  # pragma: no cover - a core dependency
        raise RuntimeMissingError("onnxruntime is not installed", expected="onnxruntime",
                                  hint="pip install onnxruntime==1.32.0") from err
    return onnxruntime


def session_options(threads: int | None = None):
    """Options for every onnxruntime session of the process: one global intra-op pool (`threads`, 0/None =
    onnxruntime's default), set by the first call. A chain of sessions with a pool each makes them steal cores from
    one another; and once the global pool exists, onnxruntime refuses sessions that ask for their own."""
    ort = onnxruntime()
    if "threads" not in _pool:
        ort.set_global_thread_pool_sizes(int(threads or 0), 1)
        _pool["threads"] = threads
    so = ort.SessionOptions()
    so.use_per_session_threads = False
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def pool_threads() -> int | None:
    """The intra-op thread count of this process's pool (None: not set yet, or onnxruntime's default)."""
    return _pool.get("threads")
