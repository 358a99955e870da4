"""Several processes: torchrun / DDP / FSDP glue, and the few collectives the loop needs.

``torchrun --nproc_per_node N main.py ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
``setup()`` reads them and joins the process group (NCCL on GPU, gloo on CPU). Without them it
returns a one-process ``DistInfo`` and every helper here degrades to a no-op, so the loop has a single
code path. Only rank 0 writes files.

State dicts go through ``torch.distributed.checkpoint.state_dict`` (full, unsharded tensors), which
reads and writes plain modules, DDP-wrapped and FSDP-sharded ones alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = [
    "DistInfo", "setup", "cleanup", "wrap", "unwrap", "all_reduce_sum", "all_gather_objects",
    "broadcast_object", "barrier", "full_state", "load_full_state", "optimizer_state", "load_optimizer_state",
    "pick_device",
]


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(preference: str, local_rank: int) -> torch.device:
    """``training.device`` ("auto", "cpu" or "cuda") for the process with ``LOCAL_RANK`` ``local_rank``:
    "auto" takes GPU ``local_rank`` when CUDA is visible, else the CPU."""
    if preference == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device is 'cuda' but no CUDA device is visible; use 'auto' or 'cpu'")
    if preference == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    visible = torch.cuda.device_count()
    if local_rank >= visible:
        raise RuntimeError(
            f"this process has LOCAL_RANK {local_rank}, but only {visible} CUDA device(s) are visible: start at "
            f"most one process per GPU (torchrun --nproc_per_node {visible}), or set training.device to 'cpu'"
        )
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def setup(device: str = "auto") -> DistInfo:
    """Join the torchrun process group if there is one; pick this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank, world, local_rank, dev)


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, info: DistInfo, strategy: str) -> nn.Module:
    """DDP (``strategy='ddp'``) or FSDP2 ``fully_shard`` on every block of every ModuleList plus the root
    (``'fsdp'``); the model itself for one process."""
    if not info.enabled:
        return model
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        # the mesh of this run's device: fully_shard's default mesh is CUDA whenever a GPU is visible, also for
        # a run on the CPU (training.device = "cpu" on a GPU machine)
        mesh = init_device_mesh(info.device.type, (info.world_size,))
        for module in list(model.modules()):
            if isinstance(module, nn.ModuleList):
                for block in module:
                    fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under a DDP or DataParallel wrapper: what to save, inspect, or call step by step outside
    the wrapper's hooks (decoding). FSDP2's ``fully_shard`` (``training.strategy = "fsdp"``) wraps nothing, so
    such a model, like a plain one, comes back as it is. Only these wrapper types are unwrapped: a model that
    merely has a child named ``module`` stays whole."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    return model.module if isinstance(model, wrappers) else model


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_sum(values: list[float], info: DistInfo) -> list[float]:
    """Sum a few floats over processes (float64)."""
    if not info.enabled:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every process."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


# ------------------------------------------------------------------------------------------------------
# State dicts (full tensors, on CPU)
# ------------------------------------------------------------------------------------------------------

def _options(**kw: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kw)


def full_state(model: nn.Module, names: set[str] | None = None) -> dict[str, Tensor]:
    """The model's full (unsharded) tensors on CPU, restricted to ``names`` if given.

    Under FSDP this is a collective: every process must call it (rank 0 receives the tensors).
    """
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    state = get_model_state_dict(model, options=_options(cpu_offload=True))
    if names is not None:
        state = {k: v for k, v in state.items() if k in names}
    return {k: v.detach().cpu() for k, v in state.items()}


def load_full_state(model: nn.Module, state: dict[str, Tensor]) -> None:
    """Copy full tensors (a subset of the model's) into a plain, DDP or FSDP model."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    ordered = {k: state[k] for k in sorted(state)}  # every process must visit the keys in the same order
    set_model_state_dict(model, ordered, options=_options(strict=False))


def optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's full state keyed by parameter name (collective under FSDP)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_options(cpu_offload=True))


def load_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=_options())
