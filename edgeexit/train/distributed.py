"""Data-parallel training with torchrun: one process per device, each taking its shard of every global batch.

The same command trains on one CPU process or on many GPUs and nodes:

    edgeexit train --dataset ... --method budget                        # one process (CPU or one GPU)
    torchrun --nproc_per_node 4 -m edgeexit train --dataset ... --method budget
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint host:29500 \\
        -m edgeexit train --run-dir /shared/run ...           # multi-node; run-dir on a shared disk

`python -m edgeexit train ARGS` is `edgeexit train ARGS`; `edgeexit train` itself also notices
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR), so `torchrun ... $(which edgeexit) train`
works too. The backend is gloo on CPU and nccl on CUDA; each process uses cuda:LOCAL_RANK.

What stays the same whatever the number of processes: the global batch (`--batch-size`, split over the
ranks), the data order (every rank draws the same permutation from the same seed), the gradient (each rank's
loss is rescaled so that DDP's average is the mean over the global batch, even for uneven shards), the
validation figures (summed over the ranks' shards), hence early stopping. Only rank 0 writes checkpoints and
shows progress; resuming reads the checkpoint on every rank, so on several nodes it must be on a shared disk.
BatchNorm sees only a rank's shard unless `--sync-bn` (CUDA) or `--freeze-bn` is given.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from edgeexit.errors import ConfigError, RuntimeMissingError

DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among `world_size` processes and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this process started the process group, so it tears it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """torchrun (torch.distributed.run) sets these for every process it starts."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" is cuda:LOCAL_RANK when CUDA is there, else cpu; "cuda" without CUDA is an error, not a fallback."""
    if name not in DEVICES and not name.startswith("cuda:"):
        raise ConfigError("unknown training device", got=name, expected=" | ".join(DEVICES) + " | cuda:N")
    if name == "cpu":
        return torch.device("cpu")
    if name == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeMissingError("CUDA training was asked for, but torch sees no CUDA device", got=name,
                                  expected="a CUDA build of torch and a visible GPU",
                                  hint="use --device cpu (or auto), or check CUDA_VISIBLE_DEVICES and the driver")
    if name.startswith("cuda:"):
        return torch.device(name)
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def setup(device: str = "auto") -> DistContext:
    """The process's context; starts the process group (gloo on CPU, nccl on CUDA) when torchrun launched
    several processes, or reuses one the caller already started."""
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistContext(rank, world, local, resolve_device(device, local), owns_group=False)
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistContext(device=resolve_device(device))
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
    return DistContext(rank, world, local, dev, owns_group=True)


def teardown(ctx: DistContext) -> None:
    """End the process group if `setup` started it."""
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def shard_slice(n: int, ctx: DistContext) -> slice:
    """This rank's contiguous part of a global batch of `n` (sizes differ by at most one)."""
    base, extra = divmod(n, ctx.world_size)
    start = ctx.rank * base + min(ctx.rank, extra)
    return slice(start, start + base + (1 if ctx.rank < extra else 0))


def loss_scale(local: int, total: int, ctx: DistContext) -> float:
    """Factor for a rank's mean loss over `local` samples so that DDP's average over the ranks is the mean over
    all `total` samples of the global batch: (1/W)·Σ_r (n_r·W/N)·mean_r = (1/N)·Σ samples."""
    return local * ctx.world_size / total


def all_reduce_sum(t: Tensor, ctx: DistContext) -> Tensor:
    """Sum of `t` over the ranks (in place; `t` as is in a single process)."""
    if ctx.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def wrap(module: nn.Module, ctx: DistContext, *, sync_bn: bool = False) -> nn.Module:
    """`module` under DistributedDataParallel when several processes train (parameters broadcast from rank 0),
    else `module` itself. `sync_bn` swaps BatchNorm for SyncBatchNorm, which only works on CUDA."""
    if not ctx.distributed:
        return module
    if sync_bn:
        if ctx.device.type != "cuda":
            raise ConfigError("--sync-bn needs CUDA", got=str(ctx.device), expected="cuda",
                              hint="on CPU use --freeze-bn, or let each rank normalise its own shard")
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)
