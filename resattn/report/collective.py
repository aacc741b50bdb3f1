"""The process group of a torchrun launch, as the report uses it: rank, world and object
collectives over gloo (or nothing at all in a single process)."""
from __future__ import annotations

import os

import torch


class Collective:
    """The process group of a torchrun launch (or nothing in a single process): rank, world
    and the object collectives the report needs, always over gloo (CPU objects)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.started = False
        self.group = None
        self.rank, self.world = 0, 1
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if not dist.is_initialized():
                dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
                self.started = True
            self.rank, self.world = dist.get_rank(), dist.get_world_size()
            self.group = dist.new_group(backend="gloo")

    def all_gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        self.dist.all_gather_object(out, obj, group=self.group)
        return out

    def gather(self, obj) -> list | None:
        """Every rank's object on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        out = [None] * self.world if self.rank == 0 else None
        self.dist.gather_object(obj, out, dst=0, group=self.group)
        return out

    def barrier(self) -> None:
        if self.world > 1:
            self.dist.barrier(group=self.group)

    def close(self) -> None:
        if self.started:
            self.dist.destroy_process_group()
