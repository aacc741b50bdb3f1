"""The model card: what a checkpoint is (architecture, classes, normalisation, input size,
how it was trained), read and checked once, and the one way an image becomes its input.

A card is written as JSON beside the weights (see resattn.checkpoints). `ModelCard` is that
JSON object, typed: `load_checkpoint` and `read_card` validate the file once and return a
`ModelCard`, so later code reads `card.input_size` or `card.classes` without re-deriving
defaults. `card.preprocess(image)` turns a picture into the 1 x 3 x S x S tensor the network
expects; the app, the CLIs, the report, evaluation and the bench all go through it (or
through `card.transform()` / `card.preprocess_batch`, the same maths for uint8 tensors).

The card is also a read-only Mapping over the file's keys (`card["classes"]`,
`card.get("metrics")`, `dict(card)`), for scripts and checks that treat it as the JSON
object it is; `card.to_dict()` gives that object back exactly (same keys, same order).
"""
from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
REQUIRED_CARD_KEYS = ("arch", "attention", "residual", "width", "classes")
# Keys with a typed field of their own besides the required ones; every other key of the
# file is kept, as it is, in `extra`.
OPTIONAL_CARD_KEYS = ("mean", "std", "input_size", "train_size", "weights", "metrics", "recipe", "storage",
                      "storage_source")
# Sanity bounds for card fields, so that a corrupt or hostile card cannot make the loader
# (or the app, which resizes images to input_size) allocate absurd amounts of memory.
MAX_WIDTH = 8.0
MAX_INPUT_SIZE = 2048
FALLBACK_INPUT_SIZE = 224  # for an architecture this version does not know the default of
IN_MEMORY = "The card given"  # how errors name a card that comes as a dict, not from a file


class FrozenMapping(Mapping):
    """A read-only dict (nested JSON objects of a card; lists inside become tuples)."""
    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] = ()) -> None:
        self._data = {key: _freeze(value) for key, value in dict(data).items()}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"FrozenMapping({self._data!r})"

    def __reduce__(self):
        return (FrozenMapping, (self._data,))


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value if isinstance(value, FrozenMapping) else FrozenMapping(value)
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """Back to JSON's shapes: mappings become dicts, tuples lists."""
    if isinstance(value, Mapping):
        return {key: _thaw(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return copy.copy(value)


def _is_number(value: Any) -> bool:
    """A finite int or float (JSON has no other numbers); bools and huge ints are not."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float range
        return False


def _is_whole(value: Any, low: int, high: float = math.inf) -> bool:
    return _is_number(value) and float(value).is_integer() and low <= value <= high


def default_input_size(arch: str) -> int:
    """The input size an architecture was built for (when a card does not say)."""
    from .model import DEFAULT_INPUT_SIZE

    return DEFAULT_INPUT_SIZE.get(arch, FALLBACK_INPUT_SIZE)


@dataclass(frozen=True, eq=False)
class ModelCard(Mapping):
    """A checkpoint's card, validated. Build one with `ModelCard.from_dict` (or `as_card`).

    Fields hold what the file says, typed; where the file leaves an optional key out (or
    sets it to null) the field holds the value the code uses: ImageNet's mean/std, the
    architecture's default input size, empty metrics and recipe, None otherwise. Equality
    is the file's: a card equals another card, or a dict, with the same JSON keys and values.
    """
    arch: str
    attention: str  # "mixed" | "channel" | "spatial" | "none"
    residual: str  # "arl" | "nal"
    width: float  # as in the file (an int stays an int, so the JSON round-trips)
    classes: tuple[str, ...]
    mean: tuple[float, float, float] = IMAGENET_MEAN  # per RGB channel, on the [0, 1] scale
    std: tuple[float, float, float] = IMAGENET_STD
    input_size: int | None = None  # pixels per side the network sees (None: the architecture's default; an int after construction)
    train_size: int | None = None  # the crop size it was trained at, when the card says
    weights: str | None = None  # how the weights were made, in words
    metrics: Mapping[str, Any] = field(default_factory=FrozenMapping)  # val_top1, val_per_class_top1, ...
    recipe: Mapping[str, Any] = field(default_factory=FrozenMapping)  # command, seed, epochs, precision, ...
    storage: str | None = None  # e.g. "float16, loaded as float32" (export_fp16)
    storage_source: str | None = None  # the checkpoint a float16 copy was made from
    # Every other key of the file, as it is (and an optional key the file sets to null, so
    # that to_dict() writes the null back).
    extra: Mapping[str, Any] = field(default_factory=FrozenMapping)
    # The file's keys in the file's order; None: the typed fields that are set, then `extra`.
    file_keys: tuple[str, ...] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Frozen: normalise the containers once, through object.__setattr__.
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        put("classes", tuple(self.classes))
        put("mean", tuple(self.mean))
        put("std", tuple(self.std))
        for name in ("metrics", "recipe", "extra"):
            put(name, _freeze(getattr(self, name)))
        if self.file_keys is None:
            given = [key for key in OPTIONAL_CARD_KEYS if self._set(key)]
            put("file_keys", tuple(dict.fromkeys((*REQUIRED_CARD_KEYS, *given, *self.extra))))
        else:
            put("file_keys", tuple(self.file_keys))
        if self.input_size is None:
            put("input_size", default_input_size(self.arch))
        else:
            put("input_size", int(self.input_size))

    def _set(self, key: str) -> bool:
        """Whether a directly built card sets an optional field (differs from its default)."""
        value = getattr(self, key)
        defaults = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "metrics": {}, "recipe": {}}
        return key not in defaults and value is not None or key in defaults and value != defaults[key]

    # ------------------------------------------------------------------ reading a file

    @classmethod
    def from_dict(cls, data: Any, where: str | os.PathLike = IN_MEMORY) -> ModelCard:
        """Validate a card's JSON object and type it. Raises CheckpointError saying which key
        is missing or wrong and what to do; `where` names the file in that sentence."""
        if isinstance(data, ModelCard):
            return data
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{where} does not hold a model card (a JSON object); re-save the checkpoint.")
        validate(data, where)
        typed = {key: data[key] for key in REQUIRED_CARD_KEYS}
        typed.update((key, data[key]) for key in OPTIONAL_CARD_KEYS if data.get(key) is not None)
        # Every other key; also an optional key set to null (its field keeps the default, the file its null).
        extra = {key: value for key, value in data.items() if key not in typed}
        return cls(**typed, extra=extra, file_keys=tuple(data))

    def to_dict(self) -> dict[str, Any]:
        """The card as its JSON object: the file's keys in the file's order, fresh copies."""
        return {key: self._json_value(key) for key in self.file_keys}

    def _json_value(self, key: str) -> Any:
        if key in self.extra:
            return _thaw(self.extra[key])
        return _thaw(getattr(self, key))

    # A read-only Mapping over the file's keys, for code that treats the card as JSON.
    def __getitem__(self, key: str) -> Any:
        if key not in self.file_keys:
            raise KeyError(key)
        return self._json_value(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.file_keys)

    def __len__(self) -> int:
        return len(self.file_keys)

    def __contains__(self, key: object) -> bool:
        return key in self.file_keys

    def __reduce__(self):
        # Pickled (st.cache_data, worker processes) as its JSON object, rebuilt on load.
        return (ModelCard.from_dict, (self.to_dict(),))

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with some JSON keys changed or added (validated like a file)."""
        return ModelCard.from_dict({**self.to_dict(), **changes})

    # ------------------------------------------------------------------ derived facts

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def val_top1(self) -> float | None:
        return self.metrics.get("val_top1")

    @property
    def command(self) -> str | None:
        """The command that trained these weights, when the card records it."""
        return self.recipe.get("command")

    @property
    def seed(self) -> int | None:
        return self.recipe.get("seed")

    @property
    def precision(self) -> str | None:
        """How the network was trained (e.g. "bf16 autocast, ..."), when the card records it."""
        return self.recipe.get("precision")

    # ------------------------------------------------------------------ preprocessing

    def transform(self):
        """uint8 (..., 3, H, W) -> float (..., 3, S, S): the image squashed to the card's
        input size (bilinear, anti-aliased; no crop) and normalised with its mean and std.
        For datasets (resattn.data.TensorImageDataset); `preprocess` is the same maths."""
        from .data import eval_transform

        return eval_transform(self.input_size, self.mean, self.std)

    def preprocess(self, image) -> torch.Tensor:
        """A picture (a PIL image, as resattn.load_image gives) as the float
        1 x 3 x S x S tensor this network expects, S = card.input_size."""
        from .data import image_tensor

        return self.transform()(image_tensor(image)).unsqueeze(0)

    def preprocess_batch(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N x H x W x 3 images (a resattn.data.ImageSet's) as the float N x 3 x S x S
        batch; image for image equal to `preprocess`."""
        return self.transform()(images.permute(0, 3, 1, 2))

    def pixels(self, image) -> torch.Tensor:
        """The uint8 3 x S x S pixels the network sees before normalisation (for showing
        what it saw); `preprocess` is this, normalised."""
        from .data import image_tensor, resize_transform

        return resize_transform(self.input_size)(image_tensor(image))


def as_card(card: Mapping[str, Any] | ModelCard, where: str | os.PathLike = IN_MEMORY) -> ModelCard:
    """A ModelCard from a card in either form (a plain dict, e.g. from model_card, is validated)."""
    return ModelCard.from_dict(card, where)


def validate(card: Mapping[str, Any], where: str | os.PathLike | Path) -> None:
    """Raise CheckpointError (a sentence naming the key and what to do) for a card this
    version cannot use."""
    from .model import ATTENTION_TYPES, RESIDUAL_MODES, list_models

    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        card_name = where if where == IN_MEMORY else f"The model card {where}"
        raise CheckpointError(f"{card_name} lacks {', '.join(missing)}; re-save it with save_checkpoint.")
    if card["arch"] not in list_models():
        raise CheckpointError(f"{where} is for an unknown architecture {card['arch']!r}; "
                              f"this version knows {', '.join(list_models())}.")
    if card["attention"] not in ATTENTION_TYPES + ("none",) or card["residual"] not in RESIDUAL_MODES:
        raise CheckpointError(f"{where} names attention {card['attention']!r} / residual "
                              f"{card['residual']!r}, which this version does not know.")
    classes = card["classes"]
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        raise CheckpointError(f"{where}: 'classes' must be a non-empty list of class names; fix the card.")
    width = card["width"]
    if not _is_number(width) or not 0 < width <= MAX_WIDTH:
        raise CheckpointError(f"{where} gives width {width!r}; it must be a number in (0, {MAX_WIDTH:g}]: "
                              "fix the card.")
    if "input_size" in card and not _is_whole(card["input_size"], 1, MAX_INPUT_SIZE):
        raise CheckpointError(f"{where} gives input_size {card['input_size']!r}; it must be a whole number "
                              f"of pixels from 1 to {MAX_INPUT_SIZE}: fix the card.")
    for key in ("mean", "std"):
        value = card.get(key)
        if value is not None and not (isinstance(value, (list, tuple)) and len(value) == 3 and all(map(_is_number, value))
                                      and (key == "mean" or all(v > 0 for v in value))):
            raise CheckpointError(f"{where} gives {key} {value!r}; it must be three numbers (one per RGB "
                                  "channel, std above 0): fix the card.")
    if card.get("train_size") is not None and not _is_whole(card["train_size"], 1):
        raise CheckpointError(f"{where} gives train_size {card['train_size']!r}; it must be a whole number of "
                              "pixels: fix the card.")
    for key in ("weights", "storage", "storage_source"):
        if card.get(key) is not None and not isinstance(card[key], str):
            raise CheckpointError(f"{where} gives {key} {card[key]!r}; it must be a text: fix the card.")
    for key in ("metrics", "recipe"):
        if card.get(key) is not None and not isinstance(card[key], Mapping):
            raise CheckpointError(f"{where} gives {key} {card[key]!r}; it must be a JSON object: fix the card.")
