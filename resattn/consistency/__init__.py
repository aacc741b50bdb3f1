"""Are the differences between attention types real? Mask consistency across seeds.

Two networks of one configuration (same architecture, attention, residual mode and recipe)
trained with different seeds are not the same network: their masks differ too. A difference
between, say, mixed and spatial attention on the Compare page means something only if it is
larger than the difference between two seeds of one type. This module measures both on the
same images:

- every network is traced on the same images, preprocessed as its card says; per stage the
  mask of the stage's *last* attention module is reduced to one map with each of the report's
  reductions (`resattn.analysis.reduce`: mean, class-weighted, top channels). The
  class-weighted reduction weights channels by the gradient of the image's *true* class
  (its label; the network's own top class where the label is unknown), so that every network
  is asked about the same class;
- for every pair of networks, per stage and reduction, Spearman's ρ of the two maps per
  image (on the coarser of the two maps' grids), averaged over the images, with a percentile
  bootstrap 95 % interval over images (resampled within classes, as in the dataset report:
  `resattn.analysis.significance`). Ties are broken in one seeded random order shared by
  both maps, so a network compared with itself gives exactly 1;
- `same_config` marks pairs of one type (seed-to-seed); the others are type-to-type.

Only networks of one recipe are paired (`resattn.results.Run.recipe_key`: everything but the
seed and the attention configuration), and only in recipes where some type has two or more
networks (seeds): elsewhere nothing could be compared with the seed-to-seed spread.
`--any-recipe` pairs across recipes (and calls two networks of one architecture, attention
and residual mode "same config" whatever their recipe); it is meant for development only.

A type-to-type difference *exceeds the seed-to-seed spread* when its interval lies wholly
below the seed-to-seed interval (`compare_types`). With several pairs on a side, its value is
the mean over the pairs and its interval runs from the lowest low to the highest high of the
pairs' intervals: a conservative reading (intervals that do not overlap), never a stronger one.

`python -m resattn.consistency --images pack --limit 200 --out docs/consistency` writes
`consistency.csv` (one row per pair, stage, reduction) and `consistency_run.json` (the
command, the images, seconds per network); `--results docs/results.md` then rewrites the
section between `<!-- consistency:begin -->` and `<!-- consistency:end -->` there.

The package, by subject: `networks` (which checkpoints, labels, recipes, seed sets), `maps`
(tracing, reduced masks, ρ per pair: the rows), `rows` (consistency.csv), `compare` (reading
the rows: summaries and verdicts), `results_section` (the block of docs/results.md), `cli`.
"""
from .cli import main
from .compare import (
    Similarity,
    TypeComparison,
    between_rows,
    compare_types,
    kinds_in,
    seed_rows,
    stage_sentence,
    stage_table,
    summarise,
)
from .maps import (
    CHUNK,
    METRIC,
    RANK_KEY,
    ConsistencyRun,
    consistency,
    image_rows,
    last_module_per_stage,
    pair_rows,
    pair_spearman,
    stage_maps,
)
from .networks import (
    DEFAULT_FOLDERS,
    SEEDS_FOLDER,
    Network,
    comparison_groups,
    config_label,
    find_networks,
    labelled,
    pairs_of,
    partners,
    recipe_key,
    seed_sets,
    type_label,
    type_of,
)
from .results_section import BEGIN, END, markdown, write_section
from .rows import COLUMNS, CSV_ENV, DEFAULT_CSV, default_csv, read_rows, write_rows

__all__ = ["BEGIN", "CHUNK", "COLUMNS", "CSV_ENV", "ConsistencyRun", "DEFAULT_CSV", "DEFAULT_FOLDERS", "END",
           "METRIC", "Network", "RANK_KEY", "SEEDS_FOLDER", "Similarity", "TypeComparison", "between_rows",
           "compare_types", "comparison_groups", "config_label", "consistency", "default_csv",
           "find_networks", "image_rows", "kinds_in", "labelled", "last_module_per_stage", "main",
           "markdown", "pair_rows", "pair_spearman", "pairs_of", "partners", "read_rows", "recipe_key",
           "seed_rows", "seed_sets", "stage_maps", "stage_sentence", "stage_table", "summarise",
           "type_label", "type_of", "write_rows", "write_section"]
