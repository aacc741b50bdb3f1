"""Mask consistency across seeds (resattn.consistency) on tiny random networks with known
answers, and float16 shipping of seed weights (resattn.checkpoints.export_fp16).

Known answers: a network compared with a copy of itself (another "seed" with the same
weights) gives ρ = 1 with a zero-width interval; two independently initialised networks give
ρ near 0 on noise images; an Attention-92 is matched to an Attention-56 by the last module of
each stage; the verdict sentence follows the intervals."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_tiny
from PIL import Image
from test_app import navigation_v2  # noqa: F401 (autouse: AppTest reruns go through app.py, as a server's do)

import resattn
from resattn import consistency as C
from resattn.checkpoints import FP16_STORAGE, export_fp16, fp16_state, fp16_top1, model_card
from resattn.data import ImageSet, synthetic_set

CLASSES = ["tench", "church", "parachute", "golf ball"]
SIZE = 64
pytestmark = pytest.mark.usefixtures("one_thread")


def save_net(folder: Path, name: str, *, arch: str = "attention56", attention: str = "mixed", residual: str = "arl",
             seed: int = 0, init: int | None = None, model=None, **recipe) -> Path:
    """A tiny checkpoint whose card says `seed` (the recipe's seed) and whose weights come from
    build_tiny(seed=init) (default: the card's seed, so different seeds differ)."""
    model = model or build_tiny(arch, attention=attention, residual=residual, width=0.125,
                                num_classes=len(CLASSES), seed=100 + (seed if init is None else init))
    card = model_card(model, classes=CLASSES, input_size=SIZE, train_size=SIZE, metrics={"eval_size": SIZE},
                      weights="random weights, for tests (not trained)",
                      recipe={"command": "tests/test_consistency.py", "seed": seed, "epochs": 0, **recipe})
    stem = folder / name
    resattn.save_checkpoint(stem, model, card)
    return stem


def noise_images(n: int = 16, seed: int = 0) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, SIZE, SIZE, 3), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % len(CLASSES)
    return ImageSet(images, labels, list(CLASSES), [f"noise/{i}" for i in range(n)])


# --------------------------------------------------------------------------- known answers

def test_a_network_and_a_copy_of_itself_agree_exactly(tmp_path):
    model = build_tiny("attention56", width=0.125, num_classes=len(CLASSES), seed=7)
    save_net(tmp_path, "a", seed=0, model=model)
    save_net(tmp_path, "b", seed=1, model=model)  # another "seed", same weights
    networks = C.find_networks([tmp_path])
    run = C.consistency(networks, noise_images(12), resamples=200)
    assert {(r["stage"], r["reduction"]) for r in run.rows} == {(s, r) for s in (1, 2, 3)
                                                                for r in ("mean", "class_weighted", "top_channels")}
    for row in run.rows:
        assert row["same_config"] and row["n_images"] == 12
        assert row["value"] == pytest.approx(1.0, abs=1e-12)
        assert row["low"] == row["high"] == pytest.approx(1.0, abs=1e-12)  # zero width


def test_two_random_networks_are_near_zero(tmp_path):
    save_net(tmp_path, "mixed_s0", seed=0)
    save_net(tmp_path, "mixed_s1", seed=1)
    run = C.consistency(C.find_networks([tmp_path]), noise_images(24), resamples=500)
    values = np.array([r["value"] for r in run.rows])
    assert len(values) == 9
    assert abs(values.mean()) < 0.1, values
    assert np.all(np.abs(values) < 0.4), values
    # and the intervals are intervals: they hold the mean and have a width
    assert all(r["low"] <= r["value"] <= r["high"] and r["high"] > r["low"] for r in run.rows)


def test_networks_of_different_depth_are_matched_by_the_last_module_of_each_stage(tmp_path):
    a56 = build_tiny("attention56", width=0.125, num_classes=len(CLASSES), seed=1)
    a92 = build_tiny("attention92", width=0.125, num_classes=len(CLASSES), seed=2)
    assert C.last_module_per_stage(a56) == {1: "stage1.1", 2: "stage2.1", 3: "stage3.1"}
    assert C.last_module_per_stage(a92) == {1: "stage1.1", 2: "stage2.2", 3: "stage3.3"}
    save_net(tmp_path, "a56_s0", model=a56, seed=0)
    save_net(tmp_path, "a56_s1", seed=1)
    save_net(tmp_path, "a92_s0", arch="attention92", model=a92, seed=0)
    images = noise_images(8)
    run = C.consistency(C.find_networks([tmp_path]), images, reductions=["mean"], resamples=100)
    row = next(r for r in run.rows if r["stage"] == 3 and {r["config_a"], r["config_b"]} ==
               {"attention56/mixed/arl/0", "attention92/mixed/arl/0"})
    assert not row["same_config"]
    # By hand: the two stage-3 masks (A56 stage3.1, A92 stage3.3), mean over channels, ranked
    # with the shared tie order, Spearman per image.
    from resattn.analysis.agreement import rank_metrics, rng_for, tie_broken_ranks
    from resattn.analysis.image_sets import normalise_batch

    x = normalise_batch(images.images, SIZE)
    maps = []
    for model, name in ((a56, "stage3.1"), (a92, "stage3.3")):
        mask = resattn.trace(model, x)[name].mask.float().mean(dim=1)
        maps.append(tie_broken_ranks(mask.flatten(1).numpy(), rng_for(0, C.RANK_KEY, 3, "mean")))
    expected = rank_metrics(*maps)["spearman"].mean()
    assert row["value"] == pytest.approx(expected, abs=1e-9)


def test_maps_of_different_sizes_are_compared_on_the_coarser_grid():
    rng = np.random.default_rng(0)
    fine = rng.random((3, 16, 16)).astype(np.float32)
    coarse = torch.nn.functional.interpolate(torch.from_numpy(fine)[:, None], size=(8, 8), mode="area")[:, 0].numpy()
    values = C.pair_spearman({(1, "mean"): fine}, {(1, "mean"): coarse})
    assert values[(1, "mean")] == pytest.approx(np.ones(3))  # the fine map, averaged to 8 x 8, is the coarse one


def test_ties_are_broken_alike_on_both_sides():
    """Two equal maps with ties (a saturated mask) rank alike: ρ = 1, not a random value."""
    tied = np.zeros((2, 8, 8), dtype=np.float32)
    tied[:, :4] = 1.0
    assert C.pair_spearman({(2, "mean"): tied}, {(2, "mean"): tied.copy()})[(2, "mean")] == pytest.approx([1.0, 1.0])


def test_grouping_pairs_only_networks_of_one_recipe_with_seeds(tmp_path):
    save_net(tmp_path, "mixed_s0", seed=0)
    save_net(tmp_path, "mixed_s1", seed=1)
    save_net(tmp_path, "spatial_s0", attention="spatial", seed=0)
    save_net(tmp_path, "none_s0", attention="none", seed=0)
    save_net(tmp_path, "long_mixed_s0", seed=0, planned_epochs=100)  # another recipe, one network
    save_net(tmp_path, "long_spatial_s0", attention="spatial", seed=0, planned_epochs=100)
    networks = C.find_networks([tmp_path])
    labels = sorted(n.label for n in networks)
    # Two networks of mixed/arl with seed 0 (two recipes): told apart by their names.
    assert "attention56/mixed/arl/0@mixed_s0" in labels and "attention56/mixed/arl/0@long_mixed_s0" in labels
    groups = C.comparison_groups(networks)
    assert [sorted(n.name for n in g) for g in groups] == [["mixed_s0", "mixed_s1", "spatial_s0"]]
    assert len(C.pairs_of(groups)) == 3
    everything = C.comparison_groups(networks, any_recipe=True)
    assert len(everything) == 1 and len(everything[0]) == 5  # the network without masks never takes part


def test_no_seeds_is_a_clear_error(tmp_path):
    save_net(tmp_path, "mixed", seed=0)
    save_net(tmp_path, "spatial", attention="spatial", seed=0)
    with pytest.raises(resattn.ResattnError, match="seed"):
        C.consistency(C.find_networks([tmp_path]), noise_images(4))


# --------------------------------------------------------------------------- verdicts

def rows_for(seed_value, seed_interval, between_value, between_interval, n=200):
    def row(a, b, same, value, interval):
        return {"stage": 2, "config_a": a, "config_b": b, "same_config": same, "reduction": "mean",
                "metric": "spearman", "value": value, "low": interval[0], "high": interval[1], "n_images": n}
    return [row("attention56/mixed/arl/0", "attention56/mixed/arl/1", True, seed_value, seed_interval),
            row("attention56/mixed/arl/0", "attention56/spatial/arl/0", False, between_value, between_interval)]


def test_types_that_differ_more_than_seeds_are_called_so():
    rows = rows_for(0.62, (0.58, 0.66), 0.31, (0.27, 0.35))
    result = C.compare_types(rows, "attention56/mixed/arl", "attention56/spatial/arl", 2, "mean")
    assert result.exceeds is True
    assert result.sentence == ("At stage 2, A56 mixed ARL and A56 spatial ARL differ more than two seeds of "
                               "A56 mixed ARL do: ρ 0.31 [0.27, 0.35] vs 0.62 [0.58, 0.66].")


@pytest.mark.parametrize("between", [(0.55, (0.50, 0.60)), (0.70, (0.66, 0.74))])
def test_overlapping_or_higher_intervals_are_not_a_difference(between):
    rows = rows_for(0.62, (0.58, 0.66), *between)
    result = C.compare_types(rows, "attention56/mixed/arl", "attention56/spatial/arl", 2, "mean")
    assert result.exceeds is False and "do not differ more than" in result.sentence


def test_several_pairs_are_summarised_by_their_mean_and_the_widest_interval():
    rows = rows_for(0.6, (0.5, 0.7), 0.3, (0.2, 0.4)) + rows_for(0.8, (0.75, 0.85), 0.1, (0.05, 0.45))
    seeds = C.summarise(C.seed_rows(rows, "attention56/mixed/arl", 2, "mean"))
    assert (seeds.value, seeds.low, seeds.high, seeds.pairs) == (pytest.approx(0.7), 0.5, 0.85, 2)
    result = C.compare_types(rows, "attention56/mixed/arl", "attention56/spatial/arl", 2, "mean")
    assert result.between.high == 0.45 and result.exceeds is True  # 0.45 < 0.5
    no_seeds = C.compare_types(rows, "attention56/spatial/arl", "attention56/mixed/arl", 2, "mean",
                               seed_kinds=["attention56/spatial/arl"])
    assert no_seeds.exceeds is None and "neither has seeds" in no_seeds.sentence


# --------------------------------------------------------------------------- the CLI and the CSV

def image_tree(root: Path, per_class: int = 3) -> Path:
    rng = np.random.default_rng(0)
    for c in CLASSES:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_cli_writes_the_csv_with_exactly_the_columns_and_the_results_block(tmp_path, capsys):
    nets = tmp_path / "ckpt"
    save_net(nets, "mixed_s0", seed=0)
    save_net(nets / "seeds", "mixed_s1", seed=1)
    save_net(nets, "spatial_s0", attention="spatial", seed=0)
    results = tmp_path / "results.md"
    results.write_text(f"# Results\n\nbefore\n\n{C.BEGIN}\nOLD-BLOCK\n{C.END}\n\nafter\n")
    out = tmp_path / "out"
    code = C.main(["--images", str(image_tree(tmp_path / "images")), "--limit", "8", "--out", str(out),
                   "--folders", str(nets), str(nets / "seeds"), "--reductions", "mean,top_channels",
                   "--results", str(results)])
    assert code == 0, capsys.readouterr().err
    with open(out / "consistency.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == C.COLUMNS
        rows = list(reader)
    assert len(rows) == 3 * 3 * 2  # 3 pairs x 3 stages x 2 reductions
    assert {r["n_images"] for r in rows} == {"8"} and {r["metric"] for r in rows} == {"spearman"}
    assert {r["same_config"] for r in rows} == {"True", "False"}
    assert C.read_rows(out / "consistency.csv")[0]["stage"] == 1
    run = json.loads((out / "consistency_run.json").read_text())
    assert set(run["seconds_per_network"]) == {"attention56/mixed/arl/0", "attention56/mixed/arl/1",
                                               "attention56/spatial/arl/0"}
    text = results.read_text()
    assert text.startswith("# Results\n\nbefore\n") and text.endswith(f"{C.END}\n\nafter\n") and "OLD-BLOCK" not in text
    assert "| 3 | seeds of A56 mixed ARL | 1 |" in text and "A56 mixed ARL vs A56 spatial ARL" in text
    # --table regenerates the same block from the CSV alone
    results.write_text(f"{C.BEGIN}\n{C.END}\n")
    assert C.main(["--table", str(out / "consistency.csv"), "--results", str(results)]) == 0
    assert "A56 mixed ARL vs A56 spatial ARL" in results.read_text()


@pytest.mark.parametrize("args, message", [
    (["--images", "/no/such/folder", "--out", "OUT"], "No image folder"),
    (["--table", "/no/such.csv"], "No consistency table"),
    (["--limit", "5"], "Give --images"),
])
def test_cli_errors_are_one_line(args, message, tmp_path, capsys):
    nets = tmp_path / "ckpt"
    save_net(nets, "mixed_s0", seed=0)
    save_net(nets, "mixed_s1", seed=1)
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args] + ["--folders", str(nets)]
    assert C.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_a_csv_with_other_columns_is_refused(tmp_path):
    path = tmp_path / "consistency.csv"
    path.write_text("stage,a,b\n1,x,y\n")
    with pytest.raises(resattn.ResattnError, match="not a consistency table"):
        C.read_rows(path)


# --------------------------------------------------------------------------- float16 seeds

def test_fp16_round_trip_loads_as_float32(tmp_path):
    source = save_net(tmp_path, "mixed_s1", seed=1)
    model, card = resattn.load_checkpoint(source)
    written = export_fp16(source, tmp_path / "seeds" / "mixed_s1")
    from safetensors import safe_open

    with safe_open(str(written), framework="pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    assert {v.dtype for k, v in stored.items() if v.is_floating_point()} == {torch.float16}
    assert written.stat().st_size < 0.55 * Path(str(source) + ".safetensors").stat().st_size
    loaded, loaded_card = resattn.load_checkpoint(tmp_path / "seeds" / "mixed_s1")
    assert loaded_card["storage"] == FP16_STORAGE and loaded_card["storage_source"] == "mixed_s1"
    assert {k: v for k, v in loaded_card.items() if not k.startswith("storage")} == card
    expected = fp16_state(model)
    for name, tensor in loaded.state_dict().items():
        assert tensor.dtype == expected[name].dtype
        assert torch.equal(tensor, expected[name]), name
        if tensor.is_floating_point():
            assert tensor.dtype == torch.float32
    # the weights moved by no more than float16's rounding
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            assert torch.allclose(loaded.state_dict()[name], tensor, rtol=1e-3, atol=1e-4), name


def test_fp16_top1_stays_within_two_tenths_of_a_point_on_generated_images(tmp_path):
    source = save_net(tmp_path, "mixed_s1", seed=1)
    images = synthetic_set(256, SIZE, len(CLASSES), seed=3)
    images.classes = list(CLASSES)
    check = fp16_top1(source, images)
    assert check["images"] == 256 and abs(check["difference"]) <= 0.2, check
    # and the exported file, loaded the way the app loads it, predicts what fp16_top1 counted
    export_fp16(source, tmp_path / "seeds" / "mixed_s1")
    from torch.utils.data import DataLoader

    from resattn.data import TensorImageDataset, eval_transform
    from resattn.evaluate import evaluate_model

    loaded, card = resattn.load_checkpoint(tmp_path / "seeds" / "mixed_s1")
    loader = DataLoader(TensorImageDataset(images, eval_transform(SIZE, card["mean"], card["std"])), batch_size=64)
    assert evaluate_model(loaded, loader, len(CLASSES), torch.device("cpu"))["top1"] == check["top1_fp16"]


def test_values_float16_cannot_hold_are_refused(tmp_path):
    model = build_tiny("attention56", width=0.125, num_classes=len(CLASSES), seed=1)
    with torch.no_grad():
        model.fc.bias[0] = 1e6
    source = save_net(tmp_path, "huge", model=model)
    with pytest.raises(resattn.CheckpointError, match="float16 cannot store"):
        export_fp16(source, tmp_path / "seeds" / "huge")
    assert not (tmp_path / "seeds").exists()


def test_fp16_top1_of_a_shipped_checkpoint_on_500_val_images():
    """0.2 point of 500 images is one image: at most one prediction may change."""
    from resattn.analysis.image_sets import load_images
    from resattn.data import pack_available

    shipped = Path(__file__).resolve().parents[1] / "checkpoints" / "attention56_mixed_arl"
    if not pack_available() or not Path(str(shipped) + ".safetensors").is_file():
        pytest.skip("needs the Imagenette pack and checkpoints/attention56_mixed_arl")
    _, card = resattn.load_checkpoint(shipped)
    images = load_images("pack", classes=card["classes"], limit=500, sample="stratified", seed=0)
    check = fp16_top1(shipped, images)
    assert check["images"] == 500 and abs(check["difference"]) <= 0.2 and check["changed"] <= 1, check


# --------------------------------------------------------------------------- the Compare page

ZOO_TYPES = [("mixed", "arl"), ("channel", "arl"), ("spatial", "arl"), ("mixed", "nal"), ("none", "arl")]


def seed_zoo(folder: Path, csv_images: int = 6) -> tuple[Path, Path]:
    """A tiny zoo (the five types, seed 0) in `folder`, seeds 1 and 2 of mixed ARL and seed 1 of
    spatial ARL in `folder`/seeds, and a consistency.csv made from them on generated images:
    (checkpoint folder, csv). Also used by tests/test_browser_consistency.py."""
    for i, (attention, residual) in enumerate(ZOO_TYPES):
        name = "attention56_none" if attention == "none" else f"attention56_{attention}_{residual}"
        save_net(folder, name, attention=attention, residual=residual, seed=0, init=10 * i)
    for seed in (1, 2):
        save_net(folder / C.SEEDS_FOLDER, f"attention56_mixed_arl_seed{seed}", seed=seed, init=10 * seed + 1)
    save_net(folder / C.SEEDS_FOLDER, "attention56_spatial_arl_seed1", attention="spatial", seed=1, init=33)
    result = C.consistency(C.find_networks([folder, folder / C.SEEDS_FOLDER]), noise_images(csv_images),
                           resamples=200)
    return folder, C.write_rows(result.rows, folder.parent / "consistency" / "consistency.csv")


@pytest.fixture
def seeded_app(tmp_path, monkeypatch):
    folder, csv_path = seed_zoo(tmp_path / "zoo")
    monkeypatch.setenv("RESATTN_CHECKPOINTS", str(folder))
    monkeypatch.setenv("RESATTN_CONSISTENCY", str(csv_path))
    monkeypatch.delenv("RESATTN_SEEDS", raising=False)
    return folder, csv_path


def compare_page():
    from test_app import assert_clean, start

    at = start("pages/compare.py")
    assert_clean(at)
    return at


def grid_headers(at) -> list[str]:
    from test_app import chart

    grid = chart(at, "compare_grid")
    return [a["text"].split("<br>")[0].removeprefix("<b>").removesuffix("</b>")
            for a in grid["layout"]["annotations"] if a["text"].startswith("<b>")]


def test_compare_panel_sets_seeds_beside_types_and_the_toggle_shows_the_seeds(seeded_app):
    at = compare_page()
    assert "How different is different?" in [h.value for h in at.header]
    assert [s.value for s in at.subheader][:2] == ["This image", "Over the dataset (6 images)"]
    image_table, dataset_table = (t.value for t in at.dataframe[:2])
    assert list(image_table.columns) == ["stage", "seeds of A56 mixed ARL", "vs A56 channel ARL",
                                         "vs A56 spatial ARL", "vs A56 mixed NAL"]
    assert list(image_table["stage"]) == [1, 2, 3]
    # three seeds of mixed ARL: three pairs, given as a range on one image
    assert all(cell.endswith("(3 pairs)") and "[" in cell for cell in image_table["seeds of A56 mixed ARL"])
    assert all(cell.endswith("(3 pairs)") for cell in image_table["vs A56 channel ARL"])  # 3 seeds x 1 channel
    assert all(cell.endswith("(6 pairs)") for cell in image_table["vs A56 spatial ARL"])  # 3 seeds x 2 spatial
    sentences = [m.value for m in at.markdown if m.value.startswith("- At stage")]
    assert len(sentences) == 6 and all("two seeds of A56 mixed ARL agree with ρ" in s for s in sentences)
    # the dataset table's numbers are the CSV's (stage 1, mean reduction, seeds of mixed ARL)
    rows = C.read_rows(seeded_app[1])
    expected = C.summarise(C.seed_rows(rows, "attention56/mixed/arl", 1, "mean"))
    assert dataset_table["seeds of A56 mixed ARL"][0] == f"{expected.text()} (3 pairs)"

    assert grid_headers(at) == ["mixed · ARL", "channel · ARL", "spatial · ARL", "mixed · NAL", "no attention"]
    at.toggle(key="_cmpseeds").set_value(True).run()
    assert not at.exception
    assert grid_headers(at) == ["seed 0", "seed 1", "seed 2"]
    assert at.query_params["cmpcols"] == "seeds"
    at.selectbox(key="cmpseedtype").set_value("attention56/spatial/arl").run()
    assert grid_headers(at) == ["seed 0", "seed 1"]
    assert at.dataframe[0].value.columns[1] == "seeds of A56 spatial ARL"
    at.toggle(key="_cmpseeds").set_value(False).run()
    assert grid_headers(at)[0] == "mixed · ARL"


def test_compare_panel_without_seeds_says_so_in_one_sentence(tmp_path, monkeypatch):
    from test_app import ZOO, save_toy

    for seed, (attention, residual) in enumerate(ZOO):
        save_toy(tmp_path, attention, residual, seed)
    monkeypatch.setenv("RESATTN_CHECKPOINTS", str(tmp_path))
    at = compare_page()
    note = [i.value for i in at.info if i.value.startswith("No seeds yet")]
    assert len(note) == 1 and note[0].count(". ") == 0  # one sentence
    assert at.toggle(key="_cmpseeds").disabled
