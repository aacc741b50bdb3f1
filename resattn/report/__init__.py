"""`python -m resattn.report --checkpoint C --images DIR_OR_PACK --out OUT [--limit N]`

Do the soft masks agree with attributions, and does that survive chance? For every image
(drawn stratified by class with a seed: `--limit 500` takes 50 per class of the 10) the
masks of every attention module reduced three ways, |IG|, signed IG, Grad-CAM (at the last
attention stage and at each module's output) and Occlusion for the predicted class, with
empirical nulls; deletion / insertion of every order under two fills; mask interventions;
cascading randomisation of the mask branches. See resattn.analysis.study for the
definitions. Writes, in OUT:

  agreement.csv     checkpoint,module,reduction,method,metric,n_images,value,null_mean,
                    null_low,null_high,p_holm: the mean over images and the less
                    significant of the two nulls (shuffle: other images' attributions;
                    smooth: random maps with the mask's autocorrelation), its mean and 95 %
                    band, and the paired t-test's p, Holm-corrected over every row
  agreement_nulls.csv   both nulls per cell, the value's bootstrap interval, raw p
  faithfulness.csv  checkpoint,order,n_images,deletion_auc,deletion_low,deletion_high,
                    insertion_auc,insertion_low,insertion_high (blurred-image fill)
  faithfulness_impute.csv   the same with the imputed fill (ROAD's idea)
  faithfulness_tests.csv    each order minus its references (pixel noise; the module's
                    smooth random order), paired, bootstrap interval, Holm-corrected p
  sanity.csv        checkpoint,randomised_through,module,reduction,spearman_to_original,
                    ssim_to_original
  sanity_agreement.csv      the agreement of the randomised masks with the attributions
  reductions.csv    the share of spatial variance each reduction keeps (and the most any one
                    map can keep: the first principal component's share), peaks on the border
  causal.csv        the target logit when a module's mask is replaced (set mean, 1, another
                    image's mask), with intervals and Holm-corrected p
  metrics.csv       one row per image (every value above, per image)
  report.json       the settings, image count, processes and time taken
  <image>.png       one figure per image (unless --no-figures)
  partial/          while it runs: each finished image's results (resattn.report.partial),
                    removed once the files above are written

Interrupted (a killed session, Ctrl-C), the same command resumes: the images saved in
OUT/partial/ are read back, only the missing ones are analysed, and every table (nulls,
bootstrap, Holm correction) is computed at the end over all images, so the files equal an
uninterrupted run's byte for byte (tested, same device and threads). Another checkpoint,
image set or setting (--bootstrap excepted) is refused with one line; --fresh starts over.

Intervals are percentile bootstraps over images, resampled within classes (seeded).

Under torchrun the images are sharded over the processes (gloo on CPU, nccl on GPUs); the
results are gathered and rank 0 writes one set of files, the same as one process writes:

    torchrun --nproc_per_node 2 -m resattn.report --checkpoint C --images pack --limit 500 --out OUT

The package: `cli` (arguments, settings, the run), `collective` (torchrun's process group),
`figure` (the per-image figure), `tables` (the CSV files and the terminal summary), `partial`
(the saved images a rerun resumes from).
"""
from .cli import main, parse_args, run
from .figure import figure_name, image_figure
from .tables import AGREEMENT_COLUMNS, FAITHFULNESS_COLUMNS, SANITY_COLUMNS, metrics_rows, summary_lines

__all__ = ["AGREEMENT_COLUMNS", "FAITHFULNESS_COLUMNS", "SANITY_COLUMNS", "figure_name", "image_figure", "main",
           "metrics_rows", "parse_args", "run", "summary_lines"]
