"""Device choice: cuda if present, else mps, else cpu; any of them can be asked for by name. And
the app's torch thread count (`use_torch_threads`)."""
from __future__ import annotations

import os

import torch

from .errors import ResattnError


def available_devices() -> list[str]:
    """Devices this machine can run on, best first."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found + ["cpu"]


def pick_device(name: str | None = None) -> torch.device:
    """`None` or "auto" picks the best available device; a name must be available here."""
    if name in (None, "", "auto"):
        return torch.device(available_devices()[0])
    kind = str(name).split(":")[0]
    if kind not in available_devices():
        raise ResattnError(f"Device {name!r} is not available here; choose one of {', '.join(available_devices())}.")
    return torch.device(name)


def torch_threads(environ=os.environ, default: int = 1) -> int:
    """RESATTN_TORCH_THREADS if it is a positive integer, else `default`."""
    value = environ.get("RESATTN_TORCH_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else default


def use_torch_threads(environ=os.environ, default: int = 1) -> int:
    """Set torch's intra-op threads for a server of many sessions (the app); returns the number.

    Each session's script runs in its own thread, and each thread that calls torch gets its own
    OpenMP team of torch.get_num_threads() workers: with a few sessions, two replicas or another
    busy process, the teams outnumber the cores and wait on each other (a trace beside one busy
    process on 2 cores: 1.0 s with 2 threads, 6 ms with 1; docs/deploy.md). The app's work per
    image is small, so one thread per computation, unless RESATTN_TORCH_THREADS says otherwise."""
    threads = torch_threads(environ, default)
    torch.set_num_threads(threads)
    return threads
