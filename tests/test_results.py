"""resattn.results: the zoo's tables and paired statistics, on constructed cards and
predictions whose answer is known."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from resattn import results, zoo_stats


def card(arch="attention56", attention="mixed", residual="arl", seed=0, top1=80.0, epochs=24, precision=None):
    recipe = {"seed": seed, "epochs": epochs, "planned_epochs": epochs, "batch_size": 64, "optimizer": "SGD",
              "schedule": "one-cycle", "augmentation": "crop", "label_smoothing": 0.1, "wall_time_s": 60.0}
    if precision:
        recipe["precision"] = precision
    return {"arch": arch, "attention": attention, "residual": residual, "width": 0.25, "train_size": 96,
            "input_size": 128, "classes": ["a", "b"], "weights": "trained",
            "metrics": {"val_top1": top1, "eval_size": 128}, "recipe": recipe}


def add_run(root: Path, name: str, correct: np.ndarray | None, shipped=False, **fields) -> None:
    """A card (top-1 from `correct`) and its predictions file, as the sweep publishes them."""
    folder = root / ("checkpoints" if shipped else "docs/cards")
    folder.mkdir(parents=True, exist_ok=True)
    top1 = fields.pop("top1", None)
    if correct is not None:
        top1 = round(100 * correct.mean(), 2)
        pred_dir = root / "docs" / "predictions"
        pred_dir.mkdir(parents=True, exist_ok=True)
        with open(pred_dir / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["index", "label", "prediction", "probability"])
            for i, ok in enumerate(correct):
                w.writerow([i, 0, 0 if ok else 1, 0.9])
    (folder / f"{name}.json").write_text(json.dumps(card(top1=top1, **fields)))


def correct_with(rate: float, n: int = 2000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(n) < rate


def test_mcnemar_exact_matches_the_binomial_test():
    a = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], bool)
    b = np.array([0, 0, 0, 0, 0, 0, 0, 1, 0, 1], bool)
    only_a, only_b, p = zoo_stats.mcnemar_exact(a, b)
    assert (only_a, only_b) == (7, 1)
    assert p == pytest.approx(2 * (1 + 8) / 2 ** 8)  # two-sided: P(X <= 1) + P(X >= 7), X ~ Bin(8, 1/2)
    assert zoo_stats.mcnemar_exact(a, a)[2] == 1.0


def test_holm_adjusts_in_step_down_order_and_keeps_missing():
    assert zoo_stats.holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])
    assert zoo_stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped at 1, monotone


def test_paired_bootstrap_interval_covers_the_true_difference_and_excludes_zero_when_large():
    a, b = correct_with(0.9, seed=1)[None], correct_with(0.7, seed=2)[None]
    diff, low, high = zoo_stats.paired_bootstrap(a, b)
    assert diff == pytest.approx(100 * (a.mean() - b.mean()))
    assert low < diff < high and low > 0
    same, low0, high0 = zoo_stats.paired_bootstrap(a, a)
    assert same == 0 and low0 == 0 and high0 == 0


def test_a_real_difference_is_called_real_and_noise_is_not(tmp_path):
    for seed in range(3):
        add_run(tmp_path, f"arl_s{seed}", correct_with(0.9, seed=10 + seed), seed=seed)
        add_run(tmp_path, f"nal_s{seed}", correct_with(0.7, seed=20 + seed), seed=seed, residual="nal")
        add_run(tmp_path, f"channel_s{seed}", correct_with(0.9, seed=30 + seed), seed=seed, attention="channel")
    configs = results.group(results.load_runs(tmp_path))
    assert [len(c.runs) for c in configs] == [3, 3, 3]
    found = {(c.a.label, c.b.label): c for c in zoo_stats.comparisons(configs)}
    arl_nal = found[("A56 mixed ARL", "A56 mixed NAL")]
    assert arl_nal.real and arl_nal.diff == pytest.approx(20, abs=3)
    assert arl_nal.sentence().startswith("A56 mixed ARL is more accurate")
    mixed_channel = found[("A56 mixed ARL", "A56 channel ARL")]  # same rate: noise only
    assert not mixed_channel.real and "no difference can be read" in mixed_channel.sentence()
    assert all(len(c.mcnemar) == 3 for c in found.values())  # one exact test per shared seed


def test_one_seed_never_gives_an_ordering(tmp_path):
    add_run(tmp_path, "arl", correct_with(0.95, seed=1))
    add_run(tmp_path, "nal", correct_with(0.5, seed=2), residual="nal")
    (comparison,) = zoo_stats.comparisons(results.group(results.load_runs(tmp_path)))
    assert comparison.low > 0  # the test set alone would separate them...
    assert not comparison.real  # ...but training's noise is unknown with one seed
    assert "single seed" in comparison.sentence()


def test_configurations_split_on_recipe_and_precision(tmp_path):
    add_run(tmp_path, "fp32", None, top1=80.0)
    add_run(tmp_path, "bf16", None, top1=81.0, precision="bf16 autocast")
    add_run(tmp_path, "long", None, top1=88.0, epochs=100)
    add_run(tmp_path, "a92", None, top1=84.0, arch="attention92")
    configs = results.group(results.load_runs(tmp_path))
    assert len(configs) == 4
    assert [c.first.depth for c in configs] == [56, 56, 56, 92]
    assert zoo_stats.comparisons(configs) == []  # no predictions: nothing is compared


def test_mean_and_sd_over_seeds(tmp_path):
    for seed, top1 in enumerate([80.0, 81.0, 82.0]):
        add_run(tmp_path, f"s{seed}", None, top1=top1, seed=seed)
    (config,) = results.group(results.load_runs(tmp_path))
    assert config.summary() == "81.00 ± 1.00"
    assert "| A56 mixed ARL | w0.25, 24 ep, fp32 | 0, 1, 2 | 81.00 ± 1.00 | 80.00 – 82.00 |" in \
        results.configs_table([config])


def test_write_replaces_only_the_generated_block(tmp_path):
    add_run(tmp_path, "one", None, top1=80.0, shipped=True)
    doc = tmp_path / "docs" / "results.md"
    doc.parent.mkdir(exist_ok=True)
    doc.write_text(f"# Results\n\nbefore\n\n{results.BEGIN}\nold table\n{results.END}\n\nafter\n")
    results.write(tmp_path)
    text = doc.read_text()
    assert "old table" not in text and text.startswith("# Results\n\nbefore\n\n") and text.endswith("\n\nafter\n")
    assert "| one | attention56 | mixed | arl | 0 |" in text
    results.write(tmp_path)
    assert doc.read_text() == text  # idempotent


def test_contrast_test_with_two_groups_is_welchs_t_test():
    a, b = np.array([84.2, 83.3, 84.2]), np.array([82.0, 80.1, 81.4])
    p, df = zoo_stats.contrast_test([(a, 1), (b, -1)])
    assert p == pytest.approx(zoo_stats.welch(a, b))
    assert 2 <= df <= 4
    assert zoo_stats.contrast_test([(a, 1), (b[:1], -1)]) is None  # one seed: no test


def test_the_test_set_alone_separating_two_networks_is_not_established(tmp_path):
    # Seeds of B scatter widely (one as good as A): the images separate the averages, the seeds do not.
    for seed, (rate_a, rate_b) in enumerate([(0.80, 0.75), (0.80, 0.70), (0.80, 0.60)]):
        add_run(tmp_path, f"arl_s{seed}", correct_with(rate_a, seed=10 + seed), seed=seed)
        add_run(tmp_path, f"nal_s{seed}", correct_with(rate_b, seed=20 + seed), seed=seed, residual="nal")
    (comparison,) = zoo_stats.comparisons(results.group(results.load_runs(tmp_path)))
    assert comparison.low > 0 and not comparison.real
    assert comparison.verdict == "not established"
    assert comparison.sentence().startswith("not established") and "ahead in 3 of 3 seeds" in comparison.sentence()


def _two_depths(root: Path, gap56: float, gap92: float) -> list:
    for seed in range(3):
        for arch, gap in (("attention56", gap56), ("attention92", gap92)):
            add_run(root, f"{arch}_arl_s{seed}", correct_with(0.85, seed=100 * seed + len(arch) + int(100 * gap)),
                    seed=seed, arch=arch)
            add_run(root, f"{arch}_nal_s{seed}", correct_with(0.85 - gap, seed=7 + 100 * seed + len(arch)),
                    seed=seed, arch=arch, residual="nal")
    return zoo_stats.depth_contrasts(zoo_stats.comparisons(results.group(results.load_runs(root))))


def test_a_gap_that_grows_with_depth_is_found_and_an_equal_one_is_not(tmp_path):
    (grows,) = _two_depths(tmp_path / "grows", gap56=0.0, gap92=0.10)
    assert grows.diff == pytest.approx(10, abs=2.5) and grows.low > 0
    assert grows.verdict == "grows" and grows.sentence().startswith("ARL's lead over NAL grows from depth 56 to 92")
    assert "the paper, CIFAR-10" in grows.sentence()
    (same,) = _two_depths(tmp_path / "same", gap56=0.05, gap92=0.05)
    assert same.verdict in ("not readable", "not established") and same.verdict != "grows"
    assert same.test[0] > 0.05 > grows.test[0]  # the seed-level contrast: equal gaps cancel
    assert "| 56 → 92 |" in results.depth_table([grows, same])
