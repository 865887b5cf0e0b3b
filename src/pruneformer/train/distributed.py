"""Data-parallel training over several processes, launched by ``torchrun`` or ``accelerate launch``.

Every rank holds a full replica of the model and of the pruning method. Each optimizer step the global batch
that a single-process run would see is cut into one shard per rank; each rank back-propagates its shard's
share of the global mean loss, and one all-reduce sums the gradients of every parameter the optimizer steps.
From there every rank runs the same deterministic updates (clipping, the method's hooks, AdamW, ADMM's Z/U
step) on the same numbers, so weights, Z and U, masks and any method state stay identical. To make sure a
rank cannot drift (an odd kernel, a rank started from other weights), the loop broadcasts rank 0's weights at
the start of a phase and rank 0's ``method.state_dict()`` at the start and at the end of every epoch. That
covers any method generically: a method only has to restore its state in ``load_state_dict``.

Why not wrap the model in ``DistributedDataParallel``: methods bind to the model's own Linears and edit their
weights and gradients between backward and the optimizer step, and some keep trainable tensors outside the
model (SPP's masks, through ``PruningMethod.param_groups``) that DDP would never reduce. One bucketed
all-reduce after backward covers all of them and keeps the single-process arithmetic.

Single-process runs take none of these paths: :func:`current` then describes a world of one.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

#: Gradients are all-reduced in buckets of at most this many bytes (DDP's default is 25 MiB).
BUCKET_BYTES = 32 * 2**20


@dataclass(frozen=True)
class World:
    """This process's place among the ranks, and the device it trains on."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that writes checkpoints, models, reports and logs."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.size > 1

    def shard(self, items: Sequence[Any]) -> list[Any]:
        """This rank's part of ``items`` (strided, so length-grouped batches split evenly)."""
        return list(items[self.rank :: self.size])

    def unshard(self, parts: Sequence[np.ndarray]) -> np.ndarray:
        """Undo :meth:`shard` on arrays gathered from every rank (rank order), restoring the global order."""
        parts = [p for p in parts if len(p)]  # only the last ranks can be empty: shards are strided
        if not parts:
            return np.zeros((0,))
        out = np.empty((sum(len(p) for p in parts),) + parts[0].shape[1:], dtype=parts[0].dtype)
        for rank, part in enumerate(parts):
            out[rank :: self.size] = part
        return out

    # -- collectives (all no-ops in a world of one) ----------------------------------------------
    def _comm(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor on the device the backend communicates from (NCCL needs CUDA, gloo takes CPU)."""
        return tensor.to(self.device) if dist.get_backend() == "nccl" else tensor.cpu()

    def sum(self, value: float) -> float:
        """The sum of ``value`` over ranks."""
        if not self.enabled:
            return value
        tensor = self._comm(torch.tensor([value], dtype=torch.float64))
        dist.all_reduce(tensor)
        return float(tensor.item())

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_gradients(self, params: Iterable[torch.Tensor]) -> None:
        """Sum the gradients of ``params`` over ranks, in buckets (one per device and dtype, capped in size)."""
        if not self.enabled:
            return
        buckets: dict[tuple[torch.device, torch.dtype], list[list[torch.Tensor]]] = {}
        for grad in (p.grad for p in params if p.grad is not None):
            chain = buckets.setdefault((grad.device, grad.dtype), [[]])
            if chain[-1] and sum(g.numel() for g in chain[-1]) * grad.element_size() > BUCKET_BYTES:
                chain.append([])
            chain[-1].append(grad)
        for chain in buckets.values():
            for bucket in chain:
                flat = self._comm(torch.cat([g.reshape(-1) for g in bucket]))
                dist.all_reduce(flat)
                for grad, part in zip(bucket, flat.split([g.numel() for g in bucket])):
                    grad.copy_(part.view_as(grad))

    @torch.no_grad()
    def broadcast_module(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers into every rank's module, in place."""
        if not self.enabled:
            return
        for tensor in list(module.parameters()) + list(module.buffers()):
            sent = self._comm(tensor.detach())
            dist.broadcast(sent, 0)
            if sent is not tensor:
                tensor.copy_(sent)

    def broadcast_state(self, state: dict[str, Any]) -> dict[str, Any]:
        """Rank 0's nested state (tensors and plain values) on every rank; tensors come back on CPU."""
        if not self.enabled:
            return state
        from .checkpoint import join_tensors, split_tensors

        tensors, skeleton = split_tensors(state) if self.is_main else ({}, None)
        header = [skeleton, {k: (tuple(t.shape), str(t.dtype).removeprefix("torch.")) for k, t in tensors.items()}]
        dist.broadcast_object_list(header, src=0)
        skeleton, layout = header
        received: dict[str, torch.Tensor] = {}
        for key, (shape, dtype) in layout.items():
            buffer = tensors[key] if self.is_main else torch.empty(shape, dtype=getattr(torch, dtype))
            sent = self._comm(buffer)
            dist.broadcast(sent, 0)
            received[key] = sent.cpu()
        return join_tensors(received, skeleton)

    def sync_method(self, method: Any) -> None:
        """Give every rank rank 0's method state (``state_dict`` -> broadcast -> ``load_state_dict``)."""
        if self.enabled and method is not None:
            method.load_state_dict(self.broadcast_state(method.state_dict()))

    def gather_rng(self) -> list[torch.Tensor]:
        """Every rank's CPU RNG state, in rank order (checkpoints keep each rank's dropout stream)."""
        state = torch.get_rng_state()
        if not self.enabled:
            return [state]
        parts = [torch.empty_like(self._comm(state)) for _ in range(self.size)]
        dist.all_gather(parts, self._comm(state))
        return [p.cpu() for p in parts]

    def gather_arrays(self, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
        """Each array gathered from every rank and put back into the order :meth:`shard` took it from."""
        if not self.enabled:
            return arrays
        gathered: list[Any] = [None] * self.size
        dist.all_gather_object(gathered, arrays)
        return tuple(self.unshard([parts[i] for parts in gathered]) for i in range(len(arrays)))

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (downloads, caches), then the others: one fetch, no race."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


@lru_cache(maxsize=1)
def _accelerate_world() -> World:
    from accelerate import PartialState

    state = PartialState()  # reads the launcher's environment, sets each rank's CUDA device
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if state.device.type == "cuda" else "gloo")
    if dist.is_initialized():  # rank and size from torch itself: accelerate reports 1 process for CPU torchrun
        return World(rank=dist.get_rank(), size=dist.get_world_size(), device=state.device)
    return World(device=state.device)


def current() -> World:
    """The world this process trains in: set up by ``torchrun`` / ``accelerate launch``, else a world of one.

    Uses accelerate's ``PartialState`` for the launcher's environment and each rank's CUDA device, and
    torch.distributed for the process group (NCCL on CUDA, gloo on CPU). A single process trains on CUDA when
    one is available.
    """
    return _accelerate_world()
