"""The guided tour, presenter mode and the opening photo through AppTest (the toy zoo of
tests/test_app.py), and the library functions behind them (resattn.teaching) on tiny
models: the sizes the tour quotes are the model's, the default-photo rule picks the first
confident correct image."""
from __future__ import annotations

import plotly.graph_objects as go
import pytest
import torch
from conftest import build_tiny
from test_app import CLASSES, assert_clean, charts, navigation_v2, save_toy, start, toy_zoo, zoo_env  # noqa: F401
from torch import nn

import resattn
from resattn import teaching, viz
from resattn.errors import ResattnError

TOUR = "pages/tour.py"
STEPS = 9


def headers(at) -> list[str]:
    return [h.value for h in at.header]


# ----------------------------------------------------------------------------- the tour in the app

def test_every_step_draws_a_live_figure(zoo_env):
    at = start(TOUR, {"step": "1"})
    for n in range(1, STEPS + 1):
        assert_clean(at)
        assert headers(at)[0].startswith(f"{n} · "), headers(at)
        assert at.query_params["step"] == str(n)
        assert charts(at), f"step {n} drew no figure"
        assert not at.error, [e.value for e in at.error]
        if n < STEPS:
            at.button(key="tour_next").click().run()


def test_back_and_links_to_a_step(zoo_env):
    at = start(TOUR, {"step": "5"})
    assert headers(at)[0].startswith("5 · ")
    at.button(key="tour_back").click().run()
    assert headers(at)[0].startswith("4 · ") and at.query_params["step"] == "4"
    assert start(TOUR, {"step": "1"}).button(key="tour_back").disabled


@pytest.mark.parametrize("raw,shown", [("99", STEPS), ("0", 1), ("-3", 1), ("two", 1)])
def test_a_step_out_of_range_is_clamped(zoo_env, raw, shown):
    at = start(TOUR, {"step": raw})
    assert_clean(at)
    assert headers(at)[0].startswith(f"{shown} · ")
    assert at.query_params["step"] == str(shown)


def test_the_last_step_opens_compare(zoo_env):
    at = start(TOUR, {"step": str(STEPS)})
    at.button(key="tour_next").click().run()
    assert_clean(at)
    assert at.title[0].value == "Compare attention types"


def test_the_mask_branch_step_quotes_the_models_own_sizes(zoo_env):
    at = start(TOUR, {"step": "4", "ckpt": "attention56_mixed_arl"})
    model, card = resattn.load_checkpoint(zoo_env / "attention56_mixed_arl")
    x = torch.zeros(1, 3, card["input_size"], card["input_size"])
    steps = teaching.mask_branch_steps(model, x, "stage1.1")
    text = "\n".join(m.value for m in at.markdown)
    for step in steps:
        assert f"{step.label}: {step.shape[0]} × {step.shape[1]} × {step.shape[2]}" in text


def test_without_masks_the_mask_steps_say_so(zoo_env):
    at = start(TOUR, {"step": "6", "ckpt": "attention56_none_arl"})
    assert_clean(at)
    assert any("has no soft masks" in i.value for i in at.info)


def test_presenter_mode_from_the_link_and_back(zoo_env):
    at = start(TOUR, {"step": "2", "present": "1"})
    assert_clean(at)
    assert any("font-size: 22px" in h.proto.body for h in at.get("html"))
    assert not any(b.key == "tour_present" for b in at.button)
    # Figures drawn in presenter mode use the colour-blind-safe scales.
    scales = {str(t["colorscale"]) for c in charts(at) for t in c["data"] if "colorscale" in t}
    safe = {str([list(stop) for stop in go.Heatmap(colorscale=s).colorscale]) for s in ("Viridis", "Cividis")}
    assert scales and scales <= safe, scales
    at.button(key="leave_presenter").click().run()
    assert at.query_params["present"] == "0"
    assert not any("font-size: 22px" in h.proto.body for h in at.get("html"))
    at.button(key="tour_present").click().run()
    assert at.query_params["present"] == "1"


def test_outside_presenter_mode_figures_keep_their_scales(zoo_env):
    at = start(TOUR, {"step": "2"})
    scales = {str(t["colorscale"]) for c in charts(at) for t in c["data"] if "colorscale" in t}
    assert str([list(stop) for stop in go.Heatmap(colorscale=viz.FEATURE_SCALE).colorscale]) in scales


# ----------------------------------------------------------------------------- the opening photo

def test_untrained_weights_open_on_the_cat_and_say_it_is_outside_the_classes(zoo_env):
    at = start()
    assert at.query_params["img"] == "sample:chelsea"
    notes = [i.value for i in at.info]
    assert any("is none of the 4 classes this network knows" in n and ", ".join(CLASSES) in n for n in notes), notes
    options = at.selectbox(key="_gallery").options
    assert all(o.endswith("· outside the training classes") for o in options if o.startswith("Chelsea"))


@pytest.fixture
def fresh_gallery():
    """The gallery is cached per process (st.cache_data, and the pack per path): forget it
    before and after a test that points RESATTN_DATA at its own pack."""
    from resattn import data
    from ui import samples

    samples._pack_gallery.clear()
    data.load_pack.cache_clear()
    yield
    samples._pack_gallery.clear()
    data.load_pack.cache_clear()


def test_the_opening_photo_follows_the_rule(zoo_env, tmp_path, monkeypatch, fresh_gallery):
    """A pack of four photos (the toy's classes) and a checkpoint whose card says it is
    trained: the app opens on the first photo the rule accepts, whichever checkpoint is
    the default, and marks the pack's photos in-distribution."""
    import numpy as np
    from PIL import Image

    from resattn.pack import prepare_pack

    pack = tmp_path / "pack"
    for split in ("train", "val"):
        for wnid, cls in zip(("n01440764", "n03028079"), ("tench", "church")):
            folder = pack / split / wnid
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((40, 40, 3), 60 * i + (0 if cls == "tench" else 120), np.uint8)).save(
                    folder / f"{i}.png")
    path, _, _ = prepare_pack(pack, tmp_path / "pack.npz", size=32, progress=False)
    monkeypatch.setenv("RESATTN_DATA", str(path))
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    stem = save_toy(zoo, "mixed", "arl", name="attention56_mixed_arl")
    card_path = stem.with_suffix(".json")
    card_path.write_text(card_path.read_text().replace("random weights, for tests (not trained)", "a test stand-in"))
    monkeypatch.setenv("RESATTN_CHECKPOINTS", str(zoo))
    chosen = []

    def rule(model, x, labels, **kw):
        chosen.append(list(labels))
        return 3  # the fourth gallery photo: church (2)
    monkeypatch.setattr(teaching, "first_confident", rule)
    at = start()
    assert_clean(at)
    # Gallery order: tench (1), tench (2), church (1), church (2); labels are the checkpoint's indices.
    assert chosen == [[CLASSES.index("tench")] * 2 + [CLASSES.index("church")] * 2]
    assert at.query_params["img"] == "imagenette:3"
    assert at.selectbox(key="_gallery").value == "imagenette:3"
    assert "Imagenette val: church (2) · in-distribution" in at.selectbox(key="_gallery").options
    assert not any("is none of the" in i.value for i in at.info)


# ----------------------------------------------------------------------------- resattn.teaching

class FixedLogits(nn.Module):
    """Returns the row of `logits` for each image (images carry their index in pixel 0)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits, dtype=torch.float32)
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].long()]


def _images(n):
    x = torch.zeros(n, 3, 2, 2)
    x[:, 0, 0, 0] = torch.arange(n)
    return x


def test_first_confident_takes_the_first_correct_and_confident_image():
    confident = 4.0  # softmax of (4, 0, 0): 0.96
    logits = [[confident, 0, 0], [0, 0.1, 0], [0, confident, 0], [0, 0, confident], [confident, 0, 0]]
    model = FixedLogits(logits)
    # image 0 is wrong (label 1), 1 is right but unsure, 2 is right and sure
    assert teaching.first_confident(model, _images(5), [1, 1, 1, 2, 0]) == 2
    assert teaching.first_confident(model, _images(5), [1, 1, 1, 2, 0], batch_size=2) == 2  # across batches
    assert teaching.first_confident(model, _images(5), [-1, 1, 0, 0, 0]) == 4  # -1: a class the model lacks
    assert teaching.first_confident(model, _images(5), [2, 0, 0, 0, 1]) is None
    assert teaching.first_confident(model, _images(5), [1, 1, 1, 2, 0], threshold=0.99) is None
    with pytest.raises(ResattnError, match="one label per image"):
        teaching.first_confident(model, _images(5), [0, 1])


@pytest.mark.parametrize("name,size", [("attention56", 64), ("attention56_cifar", 32)])
def test_mask_branch_steps_go_down_and_back_up(name, size):
    model = build_tiny(name)
    x = torch.randn(1, 3, size, size)
    for module_name, module in model.attention_modules():
        steps = teaching.mask_branch_steps(model, x, module_name)
        branch = module.soft_mask_branch
        assert len(steps) == 1 + branch.pools + (branch.pools - 1) + 2
        sides = [s.shape[1] for s in steps]
        lowest = sides.index(min(sides))
        assert lowest == branch.pools
        assert all(a > b for a, b in zip(sides[:lowest], sides[1:lowest + 1]))  # down: halving
        assert sides[lowest:-2] == sides[lowest::-1][:len(sides[lowest:-2])]  # up: the same sizes back
        assert steps[-1].shape == steps[-2].shape == steps[0].shape  # logits and M: the input's size
        trace = resattn.trace(model, x)
        assert torch.allclose(steps[-1].tensor, trace[module_name].mask[0], atol=1e-6)  # M is the trace's M


def test_stem_steps_and_errors():
    model = build_tiny("attention56")
    steps = teaching.stem_steps(model, torch.randn(1, 3, 64, 64))
    assert [s.shape[1:] for s in steps] == [(64, 64), (32, 32), (16, 16)]
    assert "7×7 convolution, stride 2" in steps[1].label and "max-pooling" in steps[2].label
    with pytest.raises(ResattnError, match="No attention module"):
        teaching.mask_branch_steps(model, torch.randn(1, 3, 64, 64), "stage9.9")
    plain = build_tiny("attention56", attention="none")
    with pytest.raises(ResattnError, match="no soft mask branch"):
        teaching.mask_branch_steps(plain, torch.randn(1, 3, 64, 64), "stage1.1")


def test_top_channels_and_combinations():
    mask = torch.zeros(5, 3, 3)
    mask[3] = 0.9
    mask[1] = 0.5
    assert teaching.top_mask_channels(mask, 2) == [3, 1]
    trunk = torch.randn(5, 3, 3)
    out = teaching.combinations(trunk, mask)
    layer = resattn.model.AttentionResidual("arl")
    assert torch.equal(out["(1+M)·T"], layer(trunk, mask))
    assert torch.equal(out["M·T"], resattn.model.AttentionResidual("nal")(trunk, mask))
    with pytest.raises(ResattnError):
        teaching.combinations(trunk, mask[:2])


# ----------------------------------------------------------------------------- Figure 1 and the misclassified gallery

def test_the_explorer_shows_the_strongest_mask_channels_with_their_features(zoo_env):
    import skimage.data
    from PIL import Image

    at = start("pages/explorer.py", {"module": "stage2.1", "ckpt": "attention56_mixed_arl", "img": "sample:coffee"})
    assert_clean(at)
    model, card = resattn.load_checkpoint(zoo_env / "attention56_mixed_arl")
    x = card.preprocess(Image.fromarray(skimage.data.coffee()))
    expected = teaching.top_mask_channels(resattn.trace(model, x)["stage2.1"].mask[0], 4)

    def grid(title: str) -> dict:
        found = [c for c in charts(at) if (c["layout"].get("title") or {}).get("text", "").startswith(title)]
        assert len(found) == 1, title
        return found[0]

    for title in ("Trunk T of these", "Output H = (1 + M)·T"):
        assert [a["text"] for a in grid(title)["layout"]["annotations"]] == [f"ch {c}" for c in expected]


def test_the_dataset_page_shows_misclassified_images_per_class(zoo_env, tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    monkeypatch.setenv("RESATTN_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "val"
    rng = np.random.default_rng(0)
    for cls in CLASSES:
        (folder / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / cls / f"{i}.png")
    at = start("pages/dataset.py", {"source": "folder", "folder": str(folder), "limit": "16",
                                    "ckpt": "attention56_mixed_arl"})
    at.button(key="ds_compute").click().run()
    assert_clean(at)
    picker = at.selectbox(key="_wrong_class")
    # The random-weight toy gets most of these noise images wrong; each option counts them.
    assert picker.options and all("misclassified" in o for o in picker.options)
    wrong_in_first = int(picker.options[0].split(": ")[1].split(" of ")[0])
    caption = next(c.value for c in at.caption if c.value.startswith("The first "))
    assert caption.startswith(f"The first {min(wrong_in_first, 8)} of the {wrong_in_first} misclassified")
