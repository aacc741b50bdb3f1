"""Checkpoints: safetensors weights + a JSON model card beside them. Loading never unpickles.

A checkpoint named `checkpoints/attention56_mixed_arl` is two files:
`attention56_mixed_arl.safetensors` (tensors; the card is also copied into its metadata so
a lone file still loads) and `attention56_mixed_arl.json` (the card, for people and tools).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

# The card's names stay importable from here (older code and scripts use these paths).
from .card import (  # noqa: F401
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_INPUT_SIZE,
    MAX_WIDTH,
    REQUIRED_CARD_KEYS,
    ModelCard,
    as_card,
)
from .errors import CheckpointError
from .model import create_model


def _stem(path: str | os.PathLike) -> Path:
    """`x`, `x.json`, `x.safetensors` all name the checkpoint `x` (also when `x` has dots in
    it, like `attention56_w0.25`)."""
    path = Path(path)
    return path.with_name(path.stem) if path.suffix in (".json", ".safetensors") else path


def sibling_path(stem: Path, suffix: str) -> Path:
    """`stem` + suffix; unlike Path.with_suffix it never eats a dotted part of the name."""
    return stem.with_name(stem.name + suffix)


def atomic_write(target: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over the target, so a
    reader (or a crash) never sees half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; checkpoints are meant to be shared
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def model_card(model: nn.Module, **fields: Any) -> dict:
    """The architecture part of a card, read off a built model, plus any extra fields."""
    card = {
        "arch": getattr(model, "arch", None),
        "attention": getattr(model, "attention", None),
        "residual": getattr(model, "residual", None),
        "width": getattr(model, "width", 1.0),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
    }
    card.update(fields)
    return card


def save_checkpoint(path: str | os.PathLike, model: nn.Module, card: Mapping[str, Any] | ModelCard, *,
                    storage_dtype: torch.dtype | None = None) -> Path:
    """Write `<path>.safetensors` and `<path>.json` atomically; returns the safetensors path.
    `card`: a ModelCard or a plain dict (e.g. from `model_card`), written as its JSON object.
    `storage_dtype` (e.g. torch.float16) stores the floating-point tensors in that type;
    `load_checkpoint` turns them back into float32 (see `export_fp16`)."""
    from safetensors.torch import save_file

    if isinstance(card, ModelCard):
        card = card.to_dict()
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise ValueError(f"the card lacks {', '.join(missing)}")
    stem = _stem(path)
    weights = sibling_path(stem, ".safetensors")
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if storage_dtype is not None:
        state = {k: v.to(storage_dtype) if v.is_floating_point() else v for k, v in state.items()}
    text = json.dumps(card, indent=2, sort_keys=False)
    atomic_write(weights, lambda tmp: save_file(state, tmp, metadata={"card": text}))
    atomic_write(sibling_path(stem, ".json"), lambda tmp: Path(tmp).write_text(text + "\n"))
    return weights


def _validate_card(card: Any, where: Path) -> ModelCard:
    """The card checked once, typed (resattn.card); CheckpointError saying what is wrong."""
    return ModelCard.from_dict(card, where)


def read_card(path: str | os.PathLike) -> ModelCard:
    """The card of a checkpoint without loading its weights (for pickers and listings)."""
    stem = _stem(path)
    json_path = sibling_path(stem, ".json")
    if json_path.is_file():
        try:
            card = json.loads(json_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # ValueError covers JSON and UTF-8 errors
            raise CheckpointError(f"The model card {json_path} is not valid JSON ({exc}); restore it "
                                  "or delete it to use the card stored in the weights.") from None
        return _validate_card(card, json_path)
    weights = sibling_path(stem, ".safetensors")
    return _validate_card(_card_from_safetensors(weights), weights)


def _card_from_safetensors(weights: Path) -> dict:
    from safetensors import safe_open

    if not weights.is_file():
        raise CheckpointError(f"No checkpoint at {weights}: check the path (expected a .safetensors file "
                              "with a .json card beside it).")
    try:
        with safe_open(str(weights), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f"{weights} is not a readable safetensors file ({exc}); "
                              "it may be truncated: download or copy it again.") from None
    if "card" not in metadata:
        raise CheckpointError(f"{weights} has no model card: put the .json card beside it.")
    try:
        return json.loads(metadata["card"])
    except (ValueError, RecursionError):
        raise CheckpointError(f"The card stored in {weights} is not valid JSON; put the .json card beside it.") from None


def _safetensors_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes from the header alone; no tensor data is read."""
    from safetensors import safe_open

    if not weights.is_file():
        raise CheckpointError(f"No weights at {weights}: the .json card needs its .safetensors file beside it.")
    try:
        with safe_open(str(weights), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({exc}); "
                              "it may be truncated: download or copy it again.") from None


def _read_safetensors(weights: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not weights.is_file():
        raise CheckpointError(f"No weights at {weights}: the .json card needs its .safetensors file beside it.")
    try:
        return load_file(str(weights), device="cpu")
    except Exception as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file ({exc}); "
                              "it may be truncated: download or copy it again.") from None


def _check_shapes(found: dict[str, tuple[int, ...]], model: nn.Module, card: ModelCard, path: Path) -> None:
    """Compare the file's tensors with the model the card describes (built on the meta
    device, so nothing is allocated before the file is known to fit)."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [f"{k}: file {list(found[k])}, model {list(shape)}" for k, shape in expected.items()
                if k in found and tuple(found[k]) != shape]
    if not (missing or unexpected or reshaped):
        return
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped)):
        if items:
            problems.append(f"{len(items)} tensors {label} (e.g. {'; '.join(items[:2])})")
    raise CheckpointError(f"The weights in {path} do not fit a {card.arch} ({card.attention}, "
                          f"{card.residual}, width {card.width}, {card.num_classes} classes) as the "
                          f"card says: {', '.join(problems)}. Use the card that was saved with these weights.")


def _read_torch_file(path: Path) -> tuple[dict[str, torch.Tensor], dict | None]:
    """A .pt/.pth file, read with weights_only=True so no code in it can run. Accepts a bare
    state dict or {"state_dict"/"model": ..., "card": {...}}."""
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}: check the path.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} was refused: it is not a plain tensor file that loads without "
                              f"running code ({first[:200]}). Convert it to .safetensors.") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a state dict; save model.state_dict() instead.")
    card = obj.get("card") if isinstance(obj.get("card"), dict) else None
    for key in ("state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise CheckpointError(f"{path} does not hold a state dict of tensors.")
    return obj, card


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelCard]:
    """Rebuild the model a card describes and load its weights strictly; eval mode. The card
    comes back validated and typed (a ModelCard; `card.preprocess(image)` makes an input).

    Raises CheckpointError (with what to do) for a missing, corrupt, unsafe or mismatched file.
    """
    path = Path(path)
    if path.suffix in (".pt", ".pth"):
        state, card = _read_torch_file(path)
        if card is None:
            json_path = path.with_suffix(".json")
            if not json_path.is_file():
                raise CheckpointError(f"{path} has no model card: put {json_path.name} beside it.")
            card = read_card(json_path)
        card = _validate_card(card, path)
        with torch.device("meta"):
            model = build_from_card(card)
        _check_shapes({k: tuple(v.shape) for k, v in state.items()}, model, card, path)
    else:
        card = read_card(path)
        weights = sibling_path(_stem(path), ".safetensors")
        with torch.device("meta"):
            model = build_from_card(card)
        _check_shapes(_safetensors_shapes(weights), model, card, weights)
        state = _read_safetensors(weights)
    # Weights stored in half precision (`export_fp16`, card "storage") compute in float32.
    state = {k: v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for k, v in state.items()}
    # Every parameter and buffer is in `state` (checked above), so uninitialised storage that
    # load_state_dict then fills is enough: no random initialisation to throw away.
    model = model.to_empty(device=device)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"The weights in {path} do not fit a {card.arch} "
                              f"({card.attention}, {card.residual}, width {card.width}) "
                              f"as the card says ({detail}). Use the card that was saved with these weights.") from None
    return model.eval(), card


FP16_STORAGE = "float16, loaded as float32"
FP16_MAX = 65504.0  # the largest finite float16


def fp16_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state with every floating-point tensor rounded to float16 and back to
    float32: exactly what loading an `export_fp16` file gives. Refuses tensors that float16
    cannot hold (beyond +-65504 or not finite) rather than storing infinities."""
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().to("cpu")
        if tensor.is_floating_point():
            too_large = tensor.numel() > 0 and float(tensor.abs().max()) > FP16_MAX
            if too_large or not bool(torch.isfinite(tensor).all()):
                raise CheckpointError(f"{name} holds values that float16 cannot store (beyond +-{FP16_MAX:g} or "
                                      "not finite); keep this checkpoint in float32.")
            tensor = tensor.to(torch.float16).float()
        state[name] = tensor
    return state


def export_fp16(source: str | os.PathLike, dest: str | os.PathLike, *, card_fields: dict | None = None) -> Path:
    """Write checkpoint `source` (any path load_checkpoint takes) as `dest` (a stem) with its
    floating-point tensors in float16: half the bytes, for shipping many seeds of one
    configuration. The card is the source's plus "storage" (FP16_STORAGE), "storage_source"
    (the source's name) and `card_fields`; `load_checkpoint` gives float32 weights back.
    Returns the safetensors path."""
    model, card = load_checkpoint(source)
    model.load_state_dict(fp16_state(model))  # checks the range before anything is written
    card = {**card.to_dict(), "storage": FP16_STORAGE, "storage_source": _stem(source).name, **(card_fields or {})}
    return save_checkpoint(dest, model, card, storage_dtype=torch.float16)


def fp16_top1(source: str | os.PathLike | nn.Module, images, *, card: Mapping[str, Any] | None = None,
              device: str | torch.device = "cpu", batch_size: int = 100) -> dict:
    """Val top-1 of a checkpoint with its float32 weights and with the same weights rounded to
    float16 (`fp16_state`), on `images` (a resattn.data.ImageSet with the card's classes),
    preprocessed as `python -m resattn.evaluate` does (`card.transform()`):
    {"top1_fp32", "top1_fp16", "difference" (fp16 - fp32, points), "changed" (images whose
    prediction changed), "images"}."""
    import copy

    from torch.utils.data import DataLoader

    from .data import TensorImageDataset
    from .evaluate import evaluate_model

    if isinstance(source, nn.Module):
        model = source
        if card is None:
            raise ValueError("fp16_top1 needs the card with a model")
        card = as_card(card)
    else:
        model, card = load_checkpoint(source, device=device)
    if list(images.classes) != list(card.classes):
        raise CheckpointError("The images' classes differ from the checkpoint's; check it on the data it was "
                              "trained on.")
    rounded = copy.deepcopy(model)
    rounded.load_state_dict(fp16_state(model))
    loader = DataLoader(TensorImageDataset(images, card.transform()), batch_size=batch_size)
    runs = [evaluate_model(m.to(device), loader, card.num_classes, torch.device(device), per_image=True)
            for m in (model, rounded)]
    changed = sum(a[2] != b[2] for a, b in zip(runs[0]["rows"], runs[1]["rows"]))
    return {"top1_fp32": runs[0]["top1"], "top1_fp16": runs[1]["top1"],
            "difference": round(runs[1]["top1"] - runs[0]["top1"], 2), "changed": int(changed),
            "images": runs[0]["images"]}


def build_from_card(card: Mapping[str, Any] | ModelCard) -> nn.Module:
    """The network a card describes, with fresh weights."""
    card = as_card(card)
    try:
        return create_model(card.arch, attention=card.attention, residual=card.residual,
                            width=float(card.width), num_classes=card.num_classes)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"The card's architecture fields are invalid ({exc}); fix the .json card.") from None


def list_checkpoints(folder: str | os.PathLike = "checkpoints") -> list[tuple[Path, ModelCard]]:
    """(path stem, card) for every checkpoint in a folder whose card reads; sorted by name.
    Unreadable cards are skipped here; loading one by path reports what is wrong."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for weights in sorted(folder.glob("*.safetensors")):
        try:
            found.append((_stem(weights), read_card(weights)))
        except CheckpointError:
            continue
    return found
