"""DistributedDataParallel set-up under `torchrun` (NCCL on GPUs, gloo on CPU); nothing home-made."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def check_device(device: str | None) -> torch.device:
    """The torch device named by ``--device``: ``cpu``, ``cuda``, ``cuda:N``, ``mps``, or None (CUDA when
    available, else the CPU).

    Raises:
        ValueError: another name, or a device this machine or this torch build does not have (named).
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps") or dev.type != "cuda" and dev.index is not None:
        raise ValueError(f"--device {device}: unknown device; expected cpu, cuda, cuda:N or mps")
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"--device {device}: CUDA is not available (this torch build or machine has no GPU; "
                             f"torch {torch.__version__}); use --device cpu")
        if dev.index is not None and dev.index >= count:
            raise ValueError(f"--device {device}: this machine has {count} CUDA device(s), cuda:0..cuda:{count - 1}")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"--device {device}: Apple MPS is not available here; use --device cpu")
    return dev


def init_distributed(device: str | None = None) -> DistInfo:
    """Initialise the process group when started by torchrun (``WORLD_SIZE`` > 1).

    Args:
        device: as :func:`check_device`; under torchrun a CUDA device is the process's ``LOCAL_RANK``
            (``cuda:N`` gives one process's GPU when not under torchrun).

    Raises:
        ValueError: an unknown or unavailable device (:func:`check_device`).
    """
    chosen = check_device(device)
    use_cuda = chosen.type == "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        index = local if world > 1 or chosen.index is None else chosen.index
        torch.cuda.set_device(index)
        dev = torch.device("cuda", index)
    else:
        dev = chosen
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        log.info("DDP rank %d/%d on %s", rank, world, dev)
    return DistInfo(rank, world, local, dev)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (the model itself when not wrapped)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Average a tensor over ranks (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value
