"""The nulls, tests and verdicts of the agreement on constructed cases whose answer is
known: a mask equal to the attribution (far above chance), a mask of another image
(chance), a constant mask (chance, no image dropped), Grad-CAM-like maps with tied zeros
(chance stays at k %, not at the size of the tied region); plus the pieces they rest on."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from resattn.analysis import study, study_tables
from resattn.analysis.agreement import rank_metrics, rng_for, tie_broken_ranks, to_grid, top_region
from resattn.analysis.nulls import (
    attribution_ranks,
    cell_values,
    mask_ranks,
    phase_surrogates,
    shuffle_offsets,
)
from resattn.analysis.reduce import ANALYSIS_REDUCTIONS
from resattn.analysis.significance import (
    agreement_verdict,
    bootstrap_interval,
    bootstrap_weights,
    holm,
    null_band,
    paired_p,
    side,
)

MODULE = "stage1.1"
GRID = 16
N = 40


def smooth_maps(count: int, seed: int, side_: int = 8) -> list[np.ndarray]:
    """Random maps as smooth as a mask: white noise at 4 x 4, resized to side x side."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 1, 4, 4, generator=g)
    return list(torch.nn.functional.interpolate(coarse, size=(side_, side_), mode="bilinear",
                                                align_corners=False)[:, 0].numpy().astype(np.float64))


def run_cells(masks: list[np.ndarray], attributions: list[np.ndarray], draws: int = 60) -> dict[str, dict]:
    """The report's agreement pipeline on constructed maps: every reduction of the module is
    `masks[i]` and every attribution method is `attributions[i]` (on the grid). Returns the
    agreement.csv rows of the (mean, abs_ig) cell by metric, plus the full rows."""
    n = len(masks)
    keys = study.attribution_keys([MODULE])
    ranks = [attribution_ranks({k: attributions[i] for k in keys}, image=i) for i in range(n)]
    offsets = shuffle_offsets(n, draws)
    cells = study.agreement_cells([MODULE])
    values = [cell_values(mask_ranks({(MODULE, r): masks[i] for r in ANALYSIS_REDUCTIONS}, image=i, grid=GRID,
                                     draws=draws), ranks[i], cells,
                          partners=[ranks[(i + int(o)) % n] for o in offsets]) for i in range(n)]
    observed = np.stack([v.observed for v in values])
    nulls = {"shuffle": np.stack([v.shuffle for v in values]), "smooth": np.stack([v.smooth for v in values])}
    main, detail = study_tables.agreement_rows("test", [MODULE], observed, nulls, bootstrap_weights(np.zeros(n), 400))
    chosen = {r["metric"]: r for r in main if r["reduction"] == "mean" and r["method"] == "abs_ig"}
    return {"cell": chosen, "rows": main, "detail": detail}


def grid_map(native: np.ndarray) -> np.ndarray:
    return to_grid(torch.from_numpy(native), GRID).numpy()


def verdicts(rows: list[dict]) -> set[int]:
    return {side(float(r["value"]), float(r["null_low"]), float(r["null_high"]), float(r["p_holm"])) for r in rows}


# --------------------------------------------------------------------------- known answers

def test_a_mask_equal_to_the_attribution_is_far_above_both_nulls():
    masks = smooth_maps(N, seed=0)
    result = run_cells(masks, [grid_map(m) for m in masks])
    cell = result["cell"]
    assert float(cell["spearman"]["value"]) == 1.0
    assert float(cell["iou"]["value"]) == 1.0
    assert float(cell["pointing"]["value"]) == 1.0
    for metric, row in cell.items():
        assert float(row["value"]) > float(row["null_high"]), metric
        assert float(row["p_holm"]) < 1e-6, metric
    # Both nulls sit near chance: Spearman about 0, IoU of two unrelated 20 % regions about
    # 0.2^2 / (0.4 - 0.2^2) = 0.11 (more with smooth maps), pointing about 0.2.
    for row in result["detail"]:
        if row["reduction"] == "mean" and row["method"] == "abs_ig":
            expected = {"spearman": (-0.15, 0.15), "iou": (0.05, 0.25), "pointing": (0.1, 0.35)}[row["metric"]]
            assert expected[0] < float(row["null_mean"]) < expected[1], row
    assert verdicts(result["rows"]) == {1}
    assert agreement_verdict(cell["spearman"], tests=len(result["rows"])).startswith("Above chance:")


def test_a_mask_of_another_image_is_chance():
    masks = smooth_maps(N, seed=1)
    derangement = rng_for(5, "test").permutation(N)
    while np.any(derangement == np.arange(N)):
        derangement = rng_for(int(derangement[0]) + 7, "test").permutation(N)
    result = run_cells(masks, [grid_map(masks[j]) for j in derangement])
    for metric, row in result["cell"].items():
        assert float(row["null_low"]) <= float(row["value"]) <= float(row["null_high"]), row
        assert float(row["p_holm"]) > 0.05, row
    assert verdicts(result["rows"]) == {0}
    assert agreement_verdict(result["cell"]["iou"]).startswith("Not distinguishable from chance:")


def test_a_constant_mask_is_chance_and_no_image_is_dropped():
    attributions = [grid_map(m) for m in smooth_maps(N, seed=2)]
    result = run_cells([np.full((8, 8), 0.5) for _ in range(N)], attributions)
    for metric, row in result["cell"].items():
        assert row["n_images"] == N
        assert np.isfinite(float(row["value"]))
        assert float(row["p_holm"]) > 0.05, row
    assert abs(float(result["cell"]["spearman"]["value"])) < 0.05
    assert 0.1 < float(result["cell"]["pointing"]["value"]) < 0.35
    assert verdicts(result["rows"]) == {0}


def test_tied_zeros_keep_chance_at_the_top_fraction():
    """Grad-CAM after ReLU: 70 % of each map is exactly 0. A region that included every tied
    pixel would be 70 % of the image, and an unrelated mask's peak would land in it ~70 % of
    the time; with ties broken at random the region is 20 % and chance is 20 %."""
    attributions = []
    for m in smooth_maps(N, seed=3):
        g = grid_map(m)
        attributions.append(np.maximum(g - np.quantile(g, 0.7), 0.0))
    assert np.mean([np.mean(a == 0) for a in attributions]) >= 0.69
    assert top_region(attributions[0], 0.2).sum() == int(np.ceil(0.2 * GRID * GRID))
    masks = smooth_maps(N, seed=4)
    result = run_cells(masks, attributions)
    pointing = result["cell"]["pointing"]
    assert 0.05 < float(pointing["value"]) < 0.4
    assert 0.12 < float(pointing["null_mean"]) < 0.3
    assert verdicts(result["rows"]) == {0}
    # The same maps with the tied region counted whole: far above 20 %, which is the bias the
    # random tie-breaking removes.
    whole = np.mean([a.ravel()[np.argmax(to_grid(torch.from_numpy(m), GRID).numpy())] <= np.quantile(a, 0.8)
                     for m, a in zip(masks, attributions)])
    assert whole > 0.5
    # And a mask equal to the tied map still agrees far above chance.
    tied = run_cells([a for a in attributions], attributions)
    assert verdicts([r for r in tied["rows"] if r["metric"] != "spearman"]) == {1}


# --------------------------------------------------------------------------- the pieces

def test_phase_surrogates_keep_the_power_spectrum_and_mean():
    m = smooth_maps(1, seed=6)[0]
    fakes = phase_surrogates(m, 5, np.random.default_rng(0))
    assert fakes.shape == (5, 8, 8)
    power = np.abs(np.fft.fft2(m - m.mean())) ** 2
    for fake in fakes:
        assert fake.mean() == pytest.approx(m.mean())
        np.testing.assert_allclose(np.abs(np.fft.fft2(fake - fake.mean())) ** 2, power, rtol=1e-6, atol=1e-9)
        assert not np.allclose(fake, m)
    constant = phase_surrogates(np.full((4, 4), 2.0), 3, np.random.default_rng(0))
    np.testing.assert_allclose(constant, 2.0)


def test_shuffle_offsets_are_derangements_and_seeded():
    offsets = shuffle_offsets(10, 100)
    assert sorted(offsets.tolist()) == list(range(1, 10))  # at most N - 1 distinct shifts, never 0
    assert np.array_equal(shuffle_offsets(500, 20), shuffle_offsets(500, 20))
    assert len(shuffle_offsets(1, 20)) == 0


def test_rank_metrics_broadcast_and_known_values():
    rng = np.random.default_rng(0)
    a = tie_broken_ranks(rng.random(100), rng)
    values = rank_metrics(a, a)
    assert values["spearman"] == 1.0 and values["iou"] == 1.0 and values["pointing"] == 1.0
    reverse = rank_metrics(a, 99 - a)
    assert reverse["spearman"] == -1.0 and reverse["iou"] == 0.0 and reverse["pointing"] == 0.0
    many = tie_broken_ranks(rng.random((7, 100)), rng)
    batch = rank_metrics(a[None], many)
    assert batch["spearman"].shape == (7,)
    for k in range(7):
        one = rank_metrics(a, many[k])
        assert all(batch[m][k] == one[m] for m in one)


def test_holm_bootstrap_and_paired_tests():
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.5]), [0.04, 0.09, 0.09, 0.5])
    assert holm([0.2])[0] == 0.2
    values = np.random.default_rng(0).normal(1.0, 1.0, 400)
    low, high = bootstrap_interval(values, bootstrap_weights(np.zeros(400), 1000))
    assert low < values.mean() < high and high - low == pytest.approx(2 * 1.96 / 20, rel=0.2)
    # Resampling within classes: with every class's values constant the mean cannot move.
    labels = np.repeat([0, 1], 50)
    low, high = bootstrap_interval(labels.astype(float), bootstrap_weights(labels, 200))
    assert low == high == 0.5
    assert paired_p(np.zeros(10)) == 1.0
    assert paired_p(values) < 1e-10
    assert paired_p(values - values.mean()) > 0.99
    mean, lo, hi = null_band(np.random.default_rng(1).normal(0, 1, (400, 200)))
    assert abs(mean) < 0.02 and lo < mean < hi and hi - lo == pytest.approx(2 * 1.96 / 20, rel=0.3)


def test_verdicts_follow_the_numbers():
    row = {"module": "stage3.1", "reduction": "class_weighted", "method": "grad_cam", "metric": "spearman",
           "n_images": 500, "value": 0.3, "null_mean": 0.01, "null_low": -0.02, "null_high": 0.04, "p_holm": 1e-9}
    assert agreement_verdict(row, tests=135).startswith("Above chance: Spearman ρ of stage3.1's mask")
    assert "0.300 over 500 images" in agreement_verdict(row) and "over 135 tests" in agreement_verdict(row, tests=135)
    assert agreement_verdict({**row, "p_holm": 0.2}).startswith("Not distinguishable")
    assert agreement_verdict({**row, "value": 0.03}).startswith("Not distinguishable")  # inside the band
    assert agreement_verdict({**row, "value": -0.3}).startswith("Below chance")
