"""Device choice: cuda if present, else mps, else cpu; any of them can be asked for by name."""
from __future__ import annotations

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
