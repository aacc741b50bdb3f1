"""Model cards in words: one-line descriptions, how the weights were made, short labels,
and which checkpoints make up the attention-type zoo."""
from __future__ import annotations

from resattn.card import ModelCard

# The five models the compare page puts side by side: (attention, residual); None = any.
ZOO_SLOTS = (("mixed", "arl"), ("channel", "arl"), ("spatial", "arl"), ("mixed", "nal"), ("none", None))
# The depth set: ARL and NAL at 56 and 92 layers, (arch, residual), mixed attention.
DEPTH_SLOTS = (("attention56", "arl"), ("attention56", "nal"), ("attention92", "arl"), ("attention92", "nal"))


def model_label(card: ModelCard) -> str:
    """Short model name used as a column header and legend entry, e.g. "mixed · ARL"."""
    return slot_label(card.attention, card.residual)


def slot_label(attention: str, residual: str | None) -> str:
    if attention == "none":
        return "no attention"
    return f"{attention} · {str(residual).upper()}"


def describe(card: ModelCard) -> str:
    """A card in one line: attention, residual mode and accuracy."""
    top1 = card.val_top1
    accuracy = f"{top1:.1f} % val top-1" if isinstance(top1, (int, float)) else "accuracy unknown"
    return f"{model_label(card)} · {accuracy}"


def provenance(card: ModelCard) -> str:
    """How the weights were made, from the card (never guessed)."""
    weights, recipe = card.weights, card.recipe
    parts = [str(weights) if weights else "the card does not say how these weights were made"]
    if recipe.get("epochs") is not None:
        parts.append(f"{recipe['epochs']} epochs")
    if recipe.get("data"):
        parts.append(str(recipe["data"]))
    return "; ".join(parts)


def recipe_signature(card: ModelCard) -> tuple:
    """What a fair comparison must hold equal besides the attention: width, train and test
    size, and the number of epochs trained."""
    recipe = card.recipe
    return (card.width, card.train_size, card.input_size, recipe.get("planned_epochs", recipe.get("epochs")))


def common_recipe(entries) -> tuple | None:
    """The recipe most checkpoints share (the zoo's), so that a set compares like with like
    even when the current checkpoint was trained longer (the flagship)."""
    counts: dict[tuple, int] = {}
    for entry in entries:
        counts[recipe_signature(entry.card)] = counts.get(recipe_signature(entry.card), 0) + 1
    return max(counts, key=counts.get) if counts else None


def untrained(card: ModelCard) -> bool:
    weights = (card.weights or "").lower()
    return any(word in weights for word in ("random", "untrained", "not trained", "initialisation"))


def pick_zoo(entries, current=None) -> tuple[list, list[str]]:
    """([(label, entry)], [missing labels]) for ZOO_SLOTS from usable entries. Within a slot
    a checkpoint of the common recipe wins (so the five differ only in their attention), then
    the current checkpoint, then one with its architecture, then the first by name."""
    slots = [((attention, residual), slot_label(attention, residual),
              lambda e, a=attention, r=residual: e.card.attention == a
              and (r is None or e.card.residual == r)) for attention, residual in ZOO_SLOTS]
    return _fill(slots, entries, current)


def pick_depth(entries, current=None) -> tuple[list, list[str]]:
    """The same for DEPTH_SLOTS: mixed attention, ARL and NAL, at depth 56 and 92."""
    slots = [((arch, residual), f"A{arch.removeprefix('attention')} · {residual.upper()}",
              lambda e, a=arch, r=residual: e.card.arch == a and e.card.attention == "mixed"
              and e.card.residual == r) for arch, residual in DEPTH_SLOTS]
    return _fill(slots, entries, current)


def _fill(slots, entries, current) -> tuple[list, list[str]]:
    ref = current.card if current is not None else None
    recipe = common_recipe(entries)

    def rank(entry):
        card = entry.card
        unlike = [True] * 3 if ref is None else [card.arch != ref.arch, card.width != ref.width,
                                                  card.input_size != ref.input_size]
        return (recipe_signature(card) != recipe, current is None or entry.name != current.name, *unlike, entry.name)

    chosen, missing = [], []
    for _, label, matches in slots:
        candidates = [e for e in entries if matches(e)]
        if candidates:
            chosen.append((label, min(candidates, key=rank)))
        else:
            missing.append(label)
    return chosen, missing
