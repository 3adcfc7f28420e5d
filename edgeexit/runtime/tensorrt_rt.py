"""TensorRT backend: the bundle's engines (one per segment) on one CUDA stream through cuda-python (`cuda.bindings`).

Every engine gets one execution context; the contexts share one scratch allocation (they run one after another on
the same stream), sized for the largest. Each segment owns device output buffers for the bundle's largest batch,
bound once; a run sets the input shape and address and calls `execute_async_v3`. Arrays are `DeviceArray`s (device
memory from the stream-ordered allocator); features never leave the device: the exit test, the gather of survivors
into the next segment's input buffer and the scatter of exiting logits are three small CUDA kernels compiled with
NVRTC, and only the per-sample exit flags come back to the host (the row indices the loop derives from them go up).

Nothing here touches TensorRT before `require_cuda_device` has seen a GPU (a Runtime without one segfaults), an
engine built for another device, TensorRT or L4T release is refused before it is deserialised (engine_record.py),
and the Runtime refuses engines that carry host code. Engines are built by `edgeexit engines` (edgeexit/engines.py).
"""

from __future__ import annotations

import ctypes
import math
import weakref
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgeexit.bundle import TensorSpec
from edgeexit.bundle.manifest import SegmentRef
from edgeexit.errors import BundleError, RuntimeMissingError
from edgeexit.runtime.backend import check_io
from edgeexit.runtime.engine_record import REBUILD_HINT, check_engine, read_record
from edgeexit.runtime.trt_device import current_device, require_cuda_device, tensorrt, version_of

# dst[dst_rows[i]] = src[src_rows[i]] for rows of `width` words (a null index array: row i itself); one thread a word
KERNELS = r"""
extern "C" __global__ void exit_flags(const float* score, long long n, float threshold, unsigned char* flags) {
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (i < n) flags[i] = score[i] >= threshold;
}

template <typename T>
__device__ void copy_rows(const T* src, const long long* src_rows, T* dst, const long long* dst_rows, long long n,
                          long long width) {
    long long total = n * width;
    for (long long t = blockIdx.x * (long long)blockDim.x + threadIdx.x; t < total;
         t += (long long)gridDim.x * blockDim.x) {
        long long i = t / width, j = t - i * width;
        long long s = src_rows ? src_rows[i] : i;
        long long d = dst_rows ? dst_rows[i] : i;
        dst[d * width + j] = src[s * width + j];
    }
}

extern "C" __global__ void copy_rows4(const unsigned int* src, const long long* src_rows, unsigned int* dst,
                                      const long long* dst_rows, long long n, long long width) {
    copy_rows(src, src_rows, dst, dst_rows, n, width);
}

extern "C" __global__ void copy_rows1(const unsigned char* src, const long long* src_rows, unsigned char* dst,
                                      const long long* dst_rows, long long n, long long width) {
    copy_rows(src, src_rows, dst, dst_rows, n, width);
}
"""
KERNEL_NAMES = ("exit_flags", "copy_rows4", "copy_rows1")
THREADS = 256


def _bindings():
    try:
        from cuda.bindings import driver, nvrtc
        from cuda.bindings import runtime as cudart
    except ImportError as err:
        raise RuntimeMissingError("the tensorrt backend needs cuda-python", got="no cuda.bindings", expected="cuda-python",
                                  hint="pip install -e '.[tensorrt]' (or '.[jetson]' on a Jetson)") from err
    return cudart, driver, nvrtc


def _check(result, what: str):
    """cuda-python returns (error, *values): the values, or RuntimeMissingError naming the call and the error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeMissingError(f"CUDA call failed: {what}", got=getattr(err, "name", err), expected="success",
                                  hint="check the driver, and that no other process holds the GPU's memory")
    return values[0] if len(values) == 1 else (tuple(values) if values else None)


def compile_kernels(arch: str = "compute_75") -> bytes:
    """PTX of KERNELS for `arch` (NVRTC needs no GPU): the compaction kernels of this backend."""
    _, _, nvrtc = _bindings()
    prog = _check(nvrtc.nvrtcCreateProgram(KERNELS.encode(), b"edgeexit_compaction.cu", 0, [], []), "nvrtcCreateProgram")
    try:
        opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++14"]
        err, = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        if int(err) != 0:
            size = _check(nvrtc.nvrtcGetProgramLogSize(prog), "nvrtcGetProgramLogSize")
            log = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, log)
            raise RuntimeMissingError("NVRTC could not compile the compaction kernels", got=log.decode(errors="replace")[-500:],
                                      hint="report this with the CUDA version")
        size = _check(nvrtc.nvrtcGetPTXSize(prog), "nvrtcGetPTXSize")
        ptx = b" " * size
        _check(nvrtc.nvrtcGetPTX(prog, ptx), "nvrtcGetPTX")
        return ptx
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


class DeviceArray:
    """A typed view of device memory: `ptr`, `shape`, `dtype`; `owner` keeps the allocation alive."""

    __slots__ = ("ptr", "shape", "dtype", "owner", "__weakref__")

    def __init__(self, ptr: int, shape: Sequence[int], dtype, owner=None):
        self.ptr, self.shape, self.dtype, self.owner = int(ptr), tuple(int(d) for d in shape), np.dtype(dtype), owner

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize

    def rows(self, n: int) -> "DeviceArray":
        """The first `n` rows (same memory)."""
        return DeviceArray(self.ptr, (n, *self.shape[1:]), self.dtype, self.owner or self)


class TensorRTSegment:
    """One engine with its own execution context (scratch shared through the backend) and output buffers."""

    def __init__(self, backend: "TensorRTBackend", path: Path, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec],
                 max_batch: int):
        trt = backend.trt
        # a foreign engine is refused before TensorRT reads a byte of it
        check_engine(read_record(path).builder, backend.device, flavour=backend.flavour, version=version_of(trt))
        engine = backend.runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BundleError(f"TensorRT could not deserialise {path.name}", got="deserialize_cuda_engine: None",
                              expected="an engine of this TensorRT", hint=REBUILD_HINT)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        mode = {n: engine.get_tensor_mode(n) for n in names}
        ins = [n for n in names if mode[n] == trt.TensorIOMode.INPUT]
        outs = [n for n in names if mode[n] == trt.TensorIOMode.OUTPUT]
        check_io(path, "inputs", inputs, ins, [list(engine.get_tensor_shape(n)) for n in ins])
        # the engine lists its outputs in its own order: match them by name to the manifest's
        if sorted(outs) != sorted(o.name for o in outputs):
            raise BundleError(f"{path.name}: its outputs differ from the manifest", got=outs,
                              expected=[o.name for o in outputs], hint="rebuild the bundle")
        check_io(path, "outputs", outputs, [o.name for o in outputs],
                 [list(engine.get_tensor_shape(o.name)) for o in outputs])
        for n in names:
            if engine.get_tensor_dtype(n) != trt.float32:
                raise BundleError(f"{path.name}: tensor {n} is not float32", got=str(engine.get_tensor_dtype(n)),
                                  expected="float32 I/O (fp16 lives inside the engine)", hint=REBUILD_HINT)
        hi = int(engine.get_tensor_profile_shape(ins[0], 0)[2][0])
        if hi < max_batch:
            raise BundleError(f"{path.name} was built for batches up to {hi}", got=hi, expected=f">= {max_batch}",
                              hint=REBUILD_HINT)
        self.engine, self.inputs, self.outputs = engine, tuple(inputs), tuple(outputs)
        self.context = backend.new_context(engine)
        self.backend = backend
        self._input = ins[0]
        self._buffers = {o.name: backend.empty((max_batch, *o.sample_shape), o.dtype) for o in outputs}
        for o in outputs:
            self.context.set_tensor_address(o.name, self._buffers[o.name].ptr)
        self._views: dict[int, dict[str, DeviceArray]] = {}
        self._batch = -1

    def run(self, feeds: Mapping[str, DeviceArray]) -> Mapping[str, DeviceArray]:
        x = feeds[self._input]
        n = x.shape[0]
        if n != self._batch:
            if not self.context.set_input_shape(self._input, x.shape):
                raise BundleError(f"the engine refused input shape {x.shape}", got=x.shape,
                                  expected="within the engine's optimisation profile")
            self._batch = n
        self.context.set_tensor_address(self._input, x.ptr)
        if not self.context.execute_async_v3(self.backend.stream_handle):
            raise RuntimeMissingError("TensorRT could not enqueue the engine", got="execute_async_v3: False",
                                      hint="the TensorRT log above says why")
        views = self._views.get(n)
        if views is None:
            views = self._views[n] = {name: buf.rows(n) for name, buf in self._buffers.items()}
        return views


class TensorRTBackend:
    """TensorRT engines on a CUDA GPU; arrays are DeviceArrays, compaction is on the device."""

    name = "tensorrt"
    format = "engine"

    def __init__(self, threads: int | None = None, device: int = 0):
        require_cuda_device("the tensorrt backend")  # before anything creates a TensorRT runtime
        self.cudart, self.driver, _ = _bindings()
        self.trt, self.flavour = tensorrt()
        _check(self.cudart.cudaSetDevice(device), "cudaSetDevice")
        _check(self.cudart.cudaFree(0), "cudaFree(0)")  # makes the primary context current for the driver API
        self.device = current_device(device)
        self.stream = _check(self.cudart.cudaStreamCreateWithFlags(self.cudart.cudaStreamNonBlocking), "cudaStreamCreate")
        self.stream_handle = int(self.stream)
        self._cu_stream = self.driver.CUstream(self.stream_handle)
        # arrays come from the stream-ordered pool; keep what it holds across synchronisations (the default, 0,
        # hands memory back to the OS at every exit test and makes the next allocation a real one)
        pool = _check(self.cudart.cudaDeviceGetDefaultMemPool(device), "cudaDeviceGetDefaultMemPool")
        _check(self.cudart.cudaMemPoolSetAttribute(pool, self.cudart.cudaMemPoolAttr.cudaMemPoolAttrReleaseThreshold,
                                                   self.driver.cuuint64_t(2**64 - 1)), "cudaMemPoolSetAttribute")
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(self.logger)
        if hasattr(self.runtime, "engine_host_code_allowed"):  # no code from a bundle: refuse engines that embed any
            self.runtime.engine_host_code_allowed = False
        self._contexts: list = []
        self._scratch: DeviceArray | None = None
        self._scratch_size = 0
        cc = self.device.compute_capability.replace(".", "")
        ptx = compile_kernels(f"compute_{cc}")
        self._module = _check(self.driver.cuModuleLoadData(ptx), "cuModuleLoadData")
        self._kernels = {k: _check(self.driver.cuModuleGetFunction(self._module, k.encode()), f"cuModuleGetFunction {k}")
                         for k in KERNEL_NAMES}
        self._flags = self.empty((0,), "uint8")
        self._rows = [self.empty((0,), "int64"), self.empty((0,), "int64")]
        self._host_flags = np.empty(0, np.uint8)

    # ---------------------------------------------------------------- memory
    def _alloc(self, nbytes: int) -> int:
        return int(_check(self.cudart.cudaMallocAsync(max(nbytes, 1), self.stream), "cudaMallocAsync"))

    def _owner(self, ptr: int):
        """An object whose collection frees `ptr` on the stream (stream-ordered: safe while queued work uses it)."""
        holder = DeviceArray(ptr, (0,), np.uint8)
        weakref.finalize(holder, self.cudart.cudaFreeAsync, ptr, self.stream)
        return holder

    def empty(self, shape: Sequence[int], dtype: str = "float32") -> DeviceArray:
        n = math.prod(shape) * np.dtype(dtype).itemsize
        ptr = self._alloc(n)
        return DeviceArray(ptr, shape, dtype, self._owner(ptr))

    def upload(self, x: np.ndarray) -> DeviceArray:
        x = np.ascontiguousarray(x)
        a = self.empty(x.shape, x.dtype.name)
        _check(self.cudart.cudaMemcpyAsync(a.ptr, x.ctypes.data, x.nbytes, self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
                                           self.stream), "cudaMemcpyAsync H2D")
        return a

    def download(self, a: DeviceArray) -> np.ndarray:
        out = np.empty(a.shape, a.dtype)
        _check(self.cudart.cudaMemcpyAsync(out.ctypes.data, a.ptr, a.nbytes, self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                                           self.stream), "cudaMemcpyAsync D2H")
        self.synchronize()
        return out

    def _indices(self, which: int, rows: np.ndarray | None) -> int:
        """Device address of `rows` as int64 (0 for None), in one of two reused index buffers."""
        if rows is None:
            return 0
        rows = np.ascontiguousarray(rows, np.int64)
        if self._rows[which].shape[0] < len(rows):
            self._rows[which] = self.empty((max(len(rows), 64),), "int64")
        _check(self.cudart.cudaMemcpyAsync(self._rows[which].ptr, rows.ctypes.data, rows.nbytes,
                                           self.cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream), "cudaMemcpyAsync rows")
        return self._rows[which].ptr

    # ---------------------------------------------------------------- contexts and scratch
    def new_context(self, engine):
        """An execution context without its own scratch: every context uses the backend's one allocation."""
        strategy = getattr(self.trt, "ExecutionContextAllocationStrategy", None)
        ctx = (engine.create_execution_context(strategy.USER_MANAGED) if strategy is not None
               else engine.create_execution_context_without_device_memory())
        size = int(engine.device_memory_size_v2 if hasattr(engine, "device_memory_size_v2") else engine.device_memory_size)
        if size > self._scratch_size:  # grow the shared scratch and hand the new one to every context
            self.synchronize()
            self._scratch = self.empty((size,), "uint8")
            self._scratch_size = size
            for c in self._contexts:
                self._set_memory(c)
        self._contexts.append(ctx)
        self._set_memory(ctx)
        return ctx

    def _set_memory(self, ctx) -> None:
        if hasattr(ctx, "set_device_memory"):
            ctx.set_device_memory(self._scratch.ptr if self._scratch else 0, self._scratch_size)
        else:  # TensorRT 10.0
            ctx.device_memory = self._scratch.ptr if self._scratch else 0

    # ---------------------------------------------------------------- the contract
    def open_segment(self, path: Path, ref: SegmentRef, inputs, outputs, max_batch: int) -> TensorRTSegment:
        return TensorRTSegment(self, Path(path), inputs, outputs, max_batch)

    def _launch(self, kernel: str, n_threads: int, args: list) -> None:
        """Launch a kernel over `n_threads` with `args` as ctypes values (the void** array built here)."""
        if n_threads <= 0:
            return
        blocks = min(max(1, -(-n_threads // THREADS)), 65535)
        params = (ctypes.c_void_p * len(args))(*[ctypes.addressof(a) for a in args])
        _check(self.driver.cuLaunchKernel(self._kernels[kernel], blocks, 1, 1, THREADS, 1, 1, 0, self._cu_stream,
                                          ctypes.addressof(params), 0), f"cuLaunchKernel {kernel}")

    def exit_flags(self, score: DeviceArray, threshold: float) -> np.ndarray:
        n = score.shape[0]
        if score.dtype != np.float32 or score.nbytes != n * 4:
            raise BundleError("the exit score must be one float32 per sample", got=f"{score.dtype} {score.shape}",
                              expected="float32 [N]", hint="rebuild the bundle")
        if self._flags.shape[0] < n:
            self._flags = self.empty((max(n, 64),), "uint8")
        if self._host_flags.shape[0] < n:
            self._host_flags = np.empty(max(n, 64), np.uint8)
        self._launch("exit_flags", n, [ctypes.c_void_p(score.ptr), ctypes.c_longlong(n), ctypes.c_float(threshold),
                                        ctypes.c_void_p(self._flags.ptr)])
        host = self._host_flags[:n]
        _check(self.cudart.cudaMemcpyAsync(host.ctypes.data, self._flags.ptr, n,
                                           self.cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream), "cudaMemcpyAsync flags")
        self.synchronize()
        return host.astype(bool)

    def _copy_rows(self, src: DeviceArray, src_rows: np.ndarray | None, dst: DeviceArray, dst_rows: np.ndarray | None,
                   n: int) -> None:
        row = src.row_bytes
        if row != dst.row_bytes:
            raise BundleError("rows of different sizes cannot be copied", got=(src.shape, dst.shape), expected="same row shape")
        words, kernel = (row // 4, "copy_rows4") if row % 4 == 0 else (row, "copy_rows1")
        s, d = self._indices(0, src_rows), self._indices(1, dst_rows)
        self._launch(kernel, n * words, [ctypes.c_void_p(src.ptr), ctypes.c_void_p(s), ctypes.c_void_p(dst.ptr),
                                         ctypes.c_void_p(d), ctypes.c_longlong(n), ctypes.c_longlong(words)])

    def gather(self, src: DeviceArray, rows: np.ndarray, out: DeviceArray) -> DeviceArray:
        view = out.rows(len(rows))
        self._copy_rows(src, rows, view, None, len(rows))
        return view

    def scatter(self, dst: DeviceArray, slots: np.ndarray | None, src: DeviceArray, rows: np.ndarray | None) -> None:
        n = src.shape[0] if rows is None else len(rows)
        self._copy_rows(src, rows, dst, slots, n)

    def synchronize(self) -> None:
        _check(self.cudart.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def close(self) -> None:
        if getattr(self, "stream", None) is None:
            return
        self.synchronize()
        self._contexts.clear()
        self._scratch = None
        self.driver.cuModuleUnload(self._module)
