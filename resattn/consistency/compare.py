"""Reading the rows: several pairs summarised, and whether two types differ more than two seeds
of one type do (`compare_types`), per stage (`stage_table`) and in words (`stage_sentence`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .networks import type_label, type_of


@dataclass(frozen=True)
class Similarity:
    """Several pairs' ρ summarised: the mean of their values, and an interval from the lowest
    low to the highest high (for one image, where low = high = value: the range over pairs)."""
    value: float
    low: float
    high: float
    pairs: int
    n_images: int

    def text(self) -> str:
        if self.low == self.high == self.value:
            return f"{self.value:.2f}"
        return f"{self.value:.2f} [{self.low:.2f}, {self.high:.2f}]"


def summarise(rows: list[dict]) -> Similarity | None:
    if not rows:
        return None
    return Similarity(float(np.mean([r["value"] for r in rows])), min(r["low"] for r in rows),
                      max(r["high"] for r in rows), len(rows), min(r["n_images"] for r in rows))


def seed_rows(rows: list[dict], kind: str, stage: int, reduction: str) -> list[dict]:
    """Seed-to-seed pairs of type `kind` at one stage and reduction."""
    return [r for r in rows if r["same_config"] and r["stage"] == stage and r["reduction"] == reduction
            and type_of(r["config_a"]) == kind and type_of(r["config_b"]) == kind]


def between_rows(rows: list[dict], kind_a: str, kind_b: str, stage: int, reduction: str) -> list[dict]:
    """Type-to-type pairs of `kind_a` and `kind_b` (either order) at one stage and reduction."""
    return [r for r in rows if not r["same_config"] and r["stage"] == stage and r["reduction"] == reduction
            and {type_of(r["config_a"]), type_of(r["config_b"])} == {kind_a, kind_b}]


@dataclass
class TypeComparison:
    stage: int
    reduction: str
    kind_a: str
    kind_b: str
    between: Similarity | None
    seeds: dict[str, Similarity]  # type -> its seed-to-seed similarity (types without seeds absent)
    exceeds: bool | None  # None: nothing to compare (no seeds, or no pair of these types)
    sentence: str


def compare_types(rows: list[dict], kind_a: str, kind_b: str, stage: int, reduction: str, *,
                  seed_kinds=None) -> TypeComparison:
    """Does type a differ from type b at `stage` more than two seeds of one type do? Yes when
    the type-to-type interval lies wholly below every available seed-to-seed interval (of
    `seed_kinds`, default both types). The sentence is computed from the numbers."""
    between = summarise(between_rows(rows, kind_a, kind_b, stage, reduction))
    seeds = {k: s for k in (seed_kinds if seed_kinds is not None else (kind_a, kind_b))
             if (s := summarise(seed_rows(rows, k, stage, reduction))) is not None}
    a, b = type_label(kind_a), type_label(kind_b)
    if between is None:
        return TypeComparison(stage, reduction, kind_a, kind_b, None, seeds, None,
                              f"At stage {stage}, no pair of {a} and {b} was compared.")
    if not seeds:
        return TypeComparison(stage, reduction, kind_a, kind_b, between, seeds, None,
                              f"At stage {stage}, {a} and {b} agree with ρ {between.text()}, but neither has seeds "
                              "to compare with.")
    exceeds = all(between.high < s.low for s in seeds.values())
    spread = " and ".join(f"{s.text()} ({type_label(k)})" if len(seeds) > 1 else s.text() for k, s in seeds.items())
    whose = (f"two seeds of {type_label(next(iter(seeds)))}" if len(seeds) == 1 else "two seeds of either")
    if exceeds:
        verdict = f"{a} and {b} differ more than {whose} do"
    else:
        verdict = f"{a} and {b} do not differ more than {whose} do (the intervals overlap or lie the other way)"
    return TypeComparison(stage, reduction, kind_a, kind_b, between, seeds, exceeds,
                          f"At stage {stage}, {verdict}: ρ {between.text()} vs {spread}.")


def kinds_in(rows: list[dict]) -> list[str]:
    """Every type in the rows, in a stable order (by depth, then attention, then residual)."""
    from ..results import ATTENTION_ORDER

    kinds = {type_of(r[c]) for r in rows for c in ("config_a", "config_b")}

    def order(kind: str):
        arch, attention, residual = kind.split("/")
        depth = int("".join(ch for ch in arch if ch.isdigit()) or 0)
        rank = ATTENTION_ORDER.index(attention) if attention in ATTENTION_ORDER else len(ATTENTION_ORDER)
        return (depth, rank, residual)

    return sorted(kinds, key=order)


def stage_table(rows: list[dict], reference: str, others, reduction: str, *,
                seed_kinds=None) -> tuple[list[dict], list[TypeComparison]]:
    """Per stage, the seed-to-seed similarity of `reference` beside its similarity to each of
    `others` (the Compare page's panel): ([{"stage", "seeds", other: Similarity | None, ...}],
    [TypeComparison per stage and other type]). The seed spread is the reference's own
    (`seed_kinds`, default [reference])."""
    stages = sorted({r["stage"] for r in rows if r["reduction"] == reduction})
    table, comparisons = [], []
    for stage in stages:
        line = {"stage": stage, "seeds": summarise(seed_rows(rows, reference, stage, reduction))}
        for other in others:
            result = compare_types(rows, reference, other, stage, reduction,
                                   seed_kinds=[reference] if seed_kinds is None else seed_kinds)
            line[other] = result.between
            comparisons.append(result)
        table.append(line)
    return table, comparisons


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def stage_sentence(comparisons: list[TypeComparison]) -> str | None:
    """One sentence for one stage of `stage_table`: how alike two seeds of the reference type
    are, which other types differ from it more than that (their interval wholly below the
    seeds') and which do not. None when there is nothing to compare."""
    decided = [c for c in comparisons if c.exceeds is not None]
    if not decided:
        return None
    first = decided[0]
    reference = type_label(first.kind_a)
    spread = first.seeds[first.kind_a] if first.kind_a in first.seeds else next(iter(first.seeds.values()))
    parts = [f"At stage {first.stage}, two seeds of {reference} agree with ρ {spread.text()}"]
    for exceeds, verb_one, verb_many in ((True, "differs from it more than that", "differ from it more than that"),
                                         (False, "does not", "do not")):
        group = [c for c in decided if c.exceeds is exceeds]
        if group:
            names = _and([f"{type_label(c.kind_b)} (ρ {c.between.text()})" for c in group])
            parts.append(f"{names} {verb_one if len(group) == 1 else verb_many}")
    return "; ".join(parts) + "."
