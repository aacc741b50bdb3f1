"""Where a training run runs: its processes (torchrun's environment, one device each, the
cores shared between them), its precision (bf16 where the hardware has it) and the machine
and code its model card records. Used by `resattn.train`."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from .device import pick_device


def bf16_supported(device: torch.device) -> tuple[bool, str]:
    """(can this device compute in bfloat16 at speed, why not). Without native support autocast
    still runs, but emulated and slower than float32, so training falls back to float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(), "this GPU has no bfloat16 support"
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported(), \
            "this CPU lacks native bfloat16 instructions (AVX512-BF16 or AMX)"
    return False, f"bf16 autocast is not used on {device.type}"


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision training will really use; says in one line when bf16 falls back."""
    if requested == "bf16":
        ok, why = bf16_supported(device)
        if not ok:
            print(f"note: --precision bf16 asked for, but {why}; training in fp32.", file=sys.stderr)
            return "fp32"
    return requested


def setup_distributed(device_name: str) -> tuple[int, int, torch.device]:
    """(rank, world size, device). Under torchrun the env vars are set; otherwise 1 process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(device_name)
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # Share the cores between the processes instead of oversubscribing them (an explicit
        # OMP_NUM_THREADS wins: e.g. 1 thread leaves a core to other work on a shared machine).
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    return rank, world, device


def any_rank(flag: bool, world: int) -> bool:
    """True when `flag` is true on at least one process (so all stop at the same step)."""
    if world == 1:
        return flag
    t = torch.tensor([int(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def project_commit() -> str:
    try:
        # "-dirty" when tracked files differ from the commit: the code that ran is not exactly it.
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True,
                              text=True, cwd=Path(__file__).resolve().parents[1], timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware(device: torch.device, world: int) -> str:
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        threads = torch.get_num_threads()
        what = f"{platform.processor() or platform.machine()} CPU, {threads} thread{'s' if threads > 1 else ''}"
    return f"{world} x {what}" if world > 1 else what
