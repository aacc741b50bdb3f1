"""The networks to compare: checkpoints with their config labels (arch/attention/residual/seed),
grouped by recipe, and the seed sets whose spread a type-to-type difference is set against."""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

from ..card import ModelCard

DEFAULT_FOLDERS = ("checkpoints", "checkpoints/seeds")
SEEDS_FOLDER = "seeds"  # inside the checkpoint folder: the seeds the app's checkpoint list does not show


def config_label(card: ModelCard) -> str:
    """arch/attention/residual/seed, e.g. "attention56/mixed/arl/1" ("?" for an unknown seed)."""
    seed = _seed(card)
    return f"{card.arch}/{card.attention}/{card.residual}/{'?' if seed is None else seed}"


def _seed(card: ModelCard) -> int | None:
    seed = card.seed
    return int(seed) if isinstance(seed, (int, float)) and not isinstance(seed, bool) else None


def type_of(config: str) -> str:
    """The type part of a config label: arch/attention/residual (the seed and any @name dropped)."""
    return "/".join(config.split("@", 1)[0].split("/")[:3])


def type_label(kind: str) -> str:
    """A type in words, e.g. "A56 mixed ARL", "A92 mixed NAL", "A56 no attention"."""
    arch, attention, residual = kind.split("/")
    depth = "".join(ch for ch in arch if ch.isdigit()) or arch
    what = "no attention" if attention == "none" else f"{attention} {residual.upper()}"
    return f"A{depth} {what}"


def recipe_key(card: ModelCard) -> tuple:
    """What a run was trained with besides its seed and attention configuration (the same key
    as the zoo's tables, resattn.results, which reads cards as JSON)."""
    from ..results import Run

    data = card.to_dict()
    data["metrics"] = data.get("metrics") or {}
    return Run("", data, False).recipe_key()


@dataclass(eq=False)
class Network:
    """One checkpoint to compare: where it is, its card and its config label (unique in a set)."""
    path: str  # the checkpoint's stem
    card: ModelCard
    label: str = ""

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def kind(self) -> str:
        return type_of(config_label(self.card))

    @property
    def seed(self) -> int | None:
        return _seed(self.card)

    @property
    def has_masks(self) -> bool:
        return self.card.attention != "none"

    @property
    def recipe(self) -> tuple:
        return recipe_key(self.card)


def labelled(networks: list[Network]) -> list[Network]:
    """Give each network its config label; networks that would share one (the same seed of a
    configuration trained twice, e.g. in fp32 and bf16) get "@<checkpoint name>" appended."""
    plain = [config_label(n.card) for n in networks]
    for network, label in zip(networks, plain):
        network.label = label if plain.count(label) == 1 else f"{label}@{network.name}"
    return networks


def find_networks(folders=DEFAULT_FOLDERS, paths=()) -> list[Network]:
    """Every readable checkpoint in `folders` (missing folders are skipped) and every path in
    `paths`, each once, labelled."""
    from ..checkpoints import _stem, list_checkpoints, read_card

    found, seen = [], set()
    for folder in folders:
        for stem, card in list_checkpoints(folder):
            if stem.resolve() not in seen:
                seen.add(stem.resolve())
                found.append(Network(str(stem), card))
    for path in paths:
        stem = _stem(path)
        if stem.resolve() not in seen:
            seen.add(stem.resolve())
            found.append(Network(str(stem), read_card(path)))
    return labelled(found)


def comparison_groups(networks: list[Network], *, any_recipe: bool = False) -> list[list[Network]]:
    """The networks with masks, grouped by recipe (one group with `any_recipe`), keeping the
    groups where some type has two or more networks: only there can a type-to-type
    similarity be set beside a seed-to-seed one."""
    groups: dict[tuple, list[Network]] = {}
    for network in networks:
        if network.has_masks:
            groups.setdefault(() if any_recipe else network.recipe, []).append(network)
    seeded = []
    for members in groups.values():
        kinds = [n.kind for n in members]
        if any(kinds.count(k) >= 2 for k in kinds):
            seeded.append(members)
    return seeded


def pairs_of(groups: list[list[Network]]) -> list[tuple[Network, Network]]:
    return [pair for members in groups for pair in combinations(members, 2)]


def seed_sets(networks: list[Network]) -> dict[str, list[Network]]:
    """type -> its seeds: the networks of that type trained with one recipe, for every type
    with two or more (the recipe with the most networks when several qualify), by seed."""
    out: dict[str, list[Network]] = {}
    for members in comparison_groups(networks):
        for kind in dict.fromkeys(n.kind for n in members):
            runs = sorted((n for n in members if n.kind == kind), key=lambda n: (n.seed is None, n.seed or 0, n.name))
            if len(runs) >= 2 and len(runs) > len(out.get(kind, [])):
                out[kind] = runs
    return out


def partners(networks: list[Network], seeds: list[Network], kinds) -> dict[str, list[Network]]:
    """For each type in `kinds`, its networks trained with the recipe of `seeds` (the types a
    seed-to-seed spread can be set against)."""
    recipe = seeds[0].recipe
    return {kind: [n for n in networks if n.kind == kind and n.has_masks and n.recipe == recipe]
            for kind in kinds}
