"""One run across several processes: the ranks `torchrun` starts, as PyTorch's process group sees them.

`torchrun --nproc_per_node N ...` starts N copies of a command with WORLD_SIZE, RANK and LOCAL_RANK
(and MASTER_ADDR/MASTER_PORT) in their environment. `init` reads them and joins the process group
(gloo on CPU, nccl on CUDA, each rank on the GPU of its LOCAL_RANK); without them it does nothing and
the process is a world of one, so every caller behaves exactly as a plain single process.

The helpers are the few collective steps the training loop and the evaluation harness need beyond
`DistributedDataParallel` itself; each is a no-op in a world of one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from percept.errors import PerceptError


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one run."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """The rank that writes: checkpoints, logs, exports, merged results."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def from_env() -> World:
    """The world torchrun describes in the environment (a world of one without it)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise PerceptError(
            "WORLD_SIZE, RANK and LOCAL_RANK must be integers (as torchrun sets them)"
        ) from None
    if size < 1 or not 0 <= rank < size:
        raise PerceptError(f"RANK {rank} is outside WORLD_SIZE {size}")
    return World(rank, size, local)


def init(device: str = "cpu", timeout_minutes: float = 30.0) -> tuple[World, torch.device]:
    """Join the process group torchrun set up (once per process); returns the world and the device
    this rank computes on (`cuda` becomes `cuda:LOCAL_RANK`). A world of one only checks `device`."""
    world, dev = from_env(), torch.device(device)
    if not world.active:
        return world, dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PerceptError("--device cuda asked for, but torch sees no CUDA device here")
        dev = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if dev.type == "cuda" else "gloo",
            rank=world.rank, world_size=world.size, timeout=timedelta(minutes=timeout_minutes),
        )  # fmt: skip
    return world, dev


def shutdown() -> None:
    """Leave the process group (when there is one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _on() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device() -> torch.device:
    """Where collective tensors live: the rank's GPU under nccl, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def barrier() -> None:
    if _on():
        dist.barrier()


def any_of(*flags: bool) -> tuple[bool, ...]:
    """Each flag, true on every rank when it is true on any (a signal or a clock seen by one rank
    must stop or checkpoint them all at the same step)."""
    if not _on():
        return tuple(flags)
    t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32, device=_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def mean_of(values: list[float]) -> list[float]:
    """Each value averaged over the ranks (float64)."""
    if not _on():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_device())
    dist.all_reduce(t)
    return (t / dist.get_world_size()).tolist()


def broadcast(obj):
    """Rank 0's `obj` on every rank (any picklable value)."""
    if not _on():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=_device())
    return box[0]


def gather(obj) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if not _on():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def broadcast_module(module: nn.Module) -> None:
    """Rank 0's parameters and buffers into `module` on every rank."""
    if not _on():
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)


@torch.no_grad()
def average_gradients(params) -> None:
    """Each gradient replaced by its mean over the ranks (for optimizers DDP does not see)."""
    if not _on():
        return
    size = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(size)


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s random draws: `seed` itself on rank 0 (a world of one draws as a
    plain run does), a distinct one on every other rank (each rank its own crops and noise)."""
    return seed if rank == 0 else (seed * 1_000_003 + 7919 * rank) % (2**63 - 1)


class Replica:
    """A model under `DistributedDataParallel` as a loss calls it: a call runs DDP's forward (so the
    backward averages the gradients over the ranks), an attribute is the model's own
    (`denoiser.sigma_data`, `model.from_latent`)."""

    def __init__(self, ddp: nn.Module) -> None:
        self.ddp = ddp

    def __call__(self, *args, **kwargs):
        return self.ddp(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.ddp.module, name)


def replicate(model: nn.Module, trained: list[torch.Tensor], device: torch.device) -> Replica:
    """`model` wrapped in `DistributedDataParallel` (rank 0's weights and buffers on every rank),
    averaging the gradients of `trained` only: the model's other parameters (a codec's entropy
    quantiles, trained by their own optimizer) are left to the caller."""
    broadcast_module(model)  # those DDP ignores too
    ids = {id(p) for p in trained}
    ignored = [n for n, p in model.named_parameters() if id(p) not in ids]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
    gpus = [device.index] if device.type == "cuda" else None
    return Replica(DistributedDataParallel(model, device_ids=gpus))
