"""Model cards in words: one-line descriptions, how the weights were made, short labels,
and which checkpoints make up the attention-type zoo."""
from __future__ import annotations

# The five models the compare page puts side by side: (attention, residual); None = any.
ZOO_SLOTS = (("mixed", "arl"), ("channel", "arl"), ("spatial", "arl"), ("mixed", "nal"), ("none", None))


def model_label(card: dict) -> str:
    """Short model name used as a column header and legend entry, e.g. "mixed · ARL"."""
    if card.get("attention") == "none":
        return "no attention"
    return f"{card.get('attention')} · {str(card.get('residual')).upper()}"


def slot_label(attention: str, residual: str | None) -> str:
    return model_label({"attention": attention, "residual": residual})


def describe(card: dict) -> str:
    """A card in one line: attention, residual mode and accuracy."""
    top1 = (card.get("metrics") or {}).get("val_top1")
    accuracy = f"{top1:.1f} % val top-1" if isinstance(top1, (int, float)) else "accuracy unknown"
    return f"{model_label(card)} · {accuracy}"


def provenance(card: dict) -> str:
    """How the weights were made, from the card (never guessed)."""
    weights = card.get("weights")
    recipe = card.get("recipe") or {}
    parts = [str(weights) if weights else "the card does not say how these weights were made"]
    if recipe.get("epochs") is not None:
        parts.append(f"{recipe['epochs']} epochs")
    if recipe.get("data"):
        parts.append(str(recipe["data"]))
    return "; ".join(parts)


def untrained(card: dict) -> bool:
    weights = str(card.get("weights", "")).lower()
    return any(word in weights for word in ("random", "untrained", "not trained", "initialisation"))


def pick_zoo(entries, current=None) -> tuple[list, list[str]]:
    """([(label, entry)], [missing labels]) for ZOO_SLOTS from usable entries. Within a
    slot the current checkpoint wins, then one with the current one's architecture, width
    and input size, then the first by name."""
    ref = (current.card if current is not None else None) or {}

    def rank(entry):
        card = entry.card
        return (current is None or entry.name != current.name, card.get("arch") != ref.get("arch"),
                card.get("width") != ref.get("width"), card.get("input_size") != ref.get("input_size"), entry.name)

    chosen, missing = [], []
    for attention, residual in ZOO_SLOTS:
        candidates = [e for e in entries if e.card.get("attention") == attention
                      and (residual is None or e.card.get("residual") == residual)]
        if candidates:
            chosen.append((slot_label(attention, residual), min(candidates, key=rank)))
        else:
            missing.append(slot_label(attention, residual))
    return chosen, missing
