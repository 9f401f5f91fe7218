"""Tests for vidlab.recipes.transfer (and its plots in vidlab.viz.transfer): pair metrics, order blindness, moving the image model between
TSN / TSM / I3D, fixed-step few-label training, presets and plots. Tiny models and in-memory videos."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import matplotlib
import pytest
import torch

import vidlab as vl
from vidlab.data.cache import CachedClipDataset
from vidlab.data.manifest import ManifestRow
from vidlab.models.lifted import I3D, TSM, TSN, TemporalShift
from vidlab.train.engine import TrainConfig
from vidlab.data.clips import ClipData
from vidlab.recipes.transfer import (
    DIRECTION_PAIRS,
    TRANSFER_PRESETS,
    TransferSettings,
    image_backbone,
    image_model_of,
    label_budget_curve,
    load_domain,
    order_sensitivity,
    pair_accuracy,
    pair_confusion,
    repeat_to,
    save_image_model,
    save_video_model,
    still_video_gap,
    train_with_budget,
)

from vidlab.viz.transfer import plot_label_budget, plot_pair_confusions

matplotlib.use("Agg")
CLASSES = ["move_left", "move_right", "move_up", "move_down", "rotate_clockwise", "rotate_counterclockwise", "grow"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _tsn() -> TSN:
    """A tiny TSN whose residual branches are not zero at init (timm zero-initialises the last BN of
    each block, which would make every block an identity and hide the temporal shift)."""
    model = TSN("test_resnet", num_classes=3, num_frames=4, img_size=32, drop_rate=0.0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    return model


# ----------------------------------------------------------------------------- pair metrics

def _scores(rows: list[tuple[int, dict[int, float]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(label, {class: score}) rows -> prob (N, K), label (N,)."""
    prob = torch.zeros(len(rows), len(CLASSES))
    for i, (_, scores) in enumerate(rows):
        for k, v in scores.items():
            prob[i, k] = v
    return prob, torch.tensor([r[0] for r in rows])


def test_pair_confusion_and_accuracy_on_known_scores():
    prob, label = _scores([
        (0, {0: 0.3, 1: 0.2, 6: 0.5}),  # left, argmax is 'grow' but left beats right: counted right
        (0, {1: 0.6}),  # left chosen as right
        (1, {1: 0.4, 0: 0.1}),  # right, correct
        (1, {1: 0.2, 0: 0.3}),  # right chosen as left
        (2, {2: 0.9}), (3, {3: 0.9}),  # up / down: correct
        (4, {5: 0.9}), (5, {4: 0.9}),  # rotations: always swapped
        (6, {0: 1.0}),  # a 'grow' video does not count for any pair
    ])
    assert pair_confusion(prob, label, CLASSES, ("move_left", "move_right")).tolist() == [[1, 1], [1, 1]]
    assert pair_confusion(prob, label, CLASSES, ("move_right", "move_left")).tolist() == [[1, 1], [1, 1]]
    assert pair_confusion(prob, label, CLASSES, ("move_up", "move_down")).tolist() == [[1, 0], [0, 1]]
    acc = pair_accuracy(prob, label, CLASSES)
    assert acc["move_left/move_right"] == pytest.approx(0.5)
    assert acc["move_up/move_down"] == pytest.approx(1.0)
    assert acc["rotate_clockwise/rotate_counterclockwise"] == pytest.approx(0.0)
    assert acc["mean"] == pytest.approx(0.5)
    assert set(acc) == {f"{a}/{b}" for a, b in DIRECTION_PAIRS} | {"mean"}


def test_pair_accuracy_of_a_pair_without_videos_is_nan_and_left_out_of_the_mean():
    prob, label = _scores([(2, {2: 1.0}), (3, {3: 1.0})])
    acc = pair_accuracy(prob, label, CLASSES, [("move_left", "move_right"), ("move_up", "move_down")])
    assert acc["move_left/move_right"] != acc["move_left/move_right"]  # nan
    assert acc["mean"] == pytest.approx(1.0)


def test_pair_metrics_name_the_bad_input():
    prob, label = _scores([(0, {0: 1.0})])
    with pytest.raises(KeyError, match="jump"):
        pair_confusion(prob, label, CLASSES, ("move_left", "jump"))
    with pytest.raises(ValueError, match="prob"):
        pair_confusion(prob[:, :3], label, CLASSES, ("move_left", "move_right"))


# ----------------------------------------------------------------------------- order blindness

def test_tsn_is_blind_to_frame_order_and_tsm_is_not():
    clips = torch.randn(2, 3, 4, 32, 32)
    tsn = _tsn()
    assert order_sensitivity(tsn, clips) < 1e-4
    tsm = TSM(image_model_of(tsn), num_classes=3, num_frames=4, drop_rate=0.0)
    assert order_sensitivity(tsm, clips) > 1e-3
    assert tsn.training  # the mode is restored
    with pytest.raises(ValueError, match=r"\(B, C, T, H, W\)"):
        order_sensitivity(tsn, clips[0])


# ----------------------------------------------------------------------------- the image model

def test_image_model_is_an_independent_2d_copy():
    tsn = _tsn()
    image = image_model_of(tsn)
    assert not image.training
    name, param = next(iter(image.named_parameters()))
    with torch.no_grad():
        param.add_(1.0)
    assert not torch.equal(param, dict(tsn.backbone.named_parameters())[name])
    out = image.forward_features(torch.randn(2, 3, 32, 32))
    assert out.ndim == 4 and out.shape[0] == 2
    with pytest.raises(ValueError, match="TSM"):
        image_model_of(TSM(image_model_of(tsn), num_classes=3, num_frames=4))
    with pytest.raises(ValueError, match="I3D"):
        image_model_of(I3D(image_model_of(tsn), num_classes=3, num_frames=4))
    with pytest.raises(ValueError, match="backbone"):
        image_model_of(torch.nn.Linear(2, 2))


def test_saved_image_model_loads_through_backbone_checkpoint(tmp_path):
    tsn = _tsn()
    with torch.no_grad():
        for p in tsn.backbone.parameters():
            p.normal_()
    path = save_image_model(image_model_of(tsn), tmp_path / "image_model.pth")
    state = torch.load(path, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    for builder in (TSM, I3D):
        lifted = builder("test_resnet", num_classes=3, num_frames=4, backbone_checkpoint=path)
        src = dict(tsn.backbone.named_parameters())
        conv = "layer4.0.conv2.weight"
        got = dict(lifted.backbone.named_parameters())
        weight = got.get(conv, got.get(conv.replace(".weight", ".net.weight")))
        if weight.ndim == 5:  # inflated with a time kernel of 1
            weight = weight[:, :, 0]
        assert torch.allclose(weight, src[conv])


def test_inflation_keeps_a_still_video_equal_to_the_image_model():
    tsn = _tsn()
    tsn.train()
    for _ in range(3):  # give BatchNorm non-trivial running statistics
        tsn(torch.randn(4, 3, 4, 32, 32) * 2 + 0.5)
    image = image_model_of(tsn)
    i3d = I3D(image, num_classes=3, num_frames=4)
    images = torch.randn(2, 3, 32, 32)
    assert still_video_gap(image, i3d, images, num_frames=5) < 1e-4
    other = image_model_of(_tsn())  # a different 2D model: not what was inflated
    assert still_video_gap(other, i3d, images, num_frames=5) > 1e-2
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        still_video_gap(image, i3d, images[0])


# ----------------------------------------------------------------------------- few labels

class _InMemoryVideos(SimpleNamespace):
    """Stands in for DecodedVideos (rows, frames, pts, classes, root) without decoding files."""

    def __len__(self) -> int:
        return len(self.rows)


def _fake_clip_data(per_class: int = 3, num_classes: int = 3, t: int = 8) -> ClipData:
    """In-memory 'decoded videos': class k = a bright column moving right at speed k (16x16)."""
    def videos(split: str, n: int) -> SimpleNamespace:
        rows, frames, pts = [], [], []
        for i in range(n * num_classes):
            label = i % num_classes
            clip = torch.zeros(t, 16, 16, 3, dtype=torch.uint8)
            for f in range(t):
                clip[f, :, (i + f * label) % 16] = 255
            rows.append(ManifestRow(f"{split}/{i}.mp4", label, split, t, 8.0, 16, 16, t / 8.0,
                                    label_name=f"c{label}"))
            frames.append(clip)
            pts.append(torch.arange(t, dtype=torch.float64).numpy() / 8.0)
        return _InMemoryVideos(rows=rows, frames=frames, pts=pts, classes=[f"c{k}" for k in range(num_classes)],
                               root=Path("/nonexistent"))

    common = {"num_frames": 4, "stride": 1}
    train = CachedClipDataset(videos("train", per_class), sampler="random", **common)
    val = CachedClipDataset(videos("val", 1), sampler="center", **common)
    test = CachedClipDataset(videos("test", 2), sampler="multi", num_clips=2, **common)
    return ClipData(train, val, test, [f"c{k}" for k in range(num_classes)])


def test_repeat_to_lists_every_video_evenly_and_deterministically():
    data = _fake_clip_data(per_class=3)
    longer = repeat_to(data.train, 20, seed=1)
    assert len(longer) == 20
    counts = torch.bincount(torch.tensor(longer.indices), minlength=len(data.train))
    assert int(counts.min()) >= 20 // 9 and int(counts.max()) <= 20 // 9 + 1
    assert repeat_to(data.train, 20, seed=1).indices == longer.indices
    assert repeat_to(data.train, 20, seed=2).indices != longer.indices
    assert longer[0]["video"].shape == (3, 4, 16, 16)
    with pytest.raises(ValueError, match="num_clips"):
        repeat_to(data.train, 0)


def test_train_with_budget_runs_exactly_the_steps_on_the_budget():
    data = _fake_clip_data(per_class=3)
    model = TSN("test_resnet", num_classes=3, num_frames=4, drop_rate=0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(lr=1e-3, log_every=1)
    out = train_with_budget(model, data, 2, steps=3, cfg=cfg, batch_size=4, progress=False)
    assert out["train_videos"] == 2 * 3
    assert out["steps"] == 3
    assert 0.0 <= out["test_top1"] <= 1.0
    assert out["test"]["num_videos"] == len(data.test)
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="steps"):
        train_with_budget(model, data, 2, steps=0, cfg=cfg)


def test_label_budget_curve_builds_a_fresh_model_per_run():
    data = _fake_clip_data(per_class=3)
    built = []

    def make():
        built.append(TSN("test_resnet", num_classes=3, num_frames=4, drop_rate=0.0))
        return built[-1]

    cfg = TrainConfig(lr=1e-3)
    rows = label_budget_curve({"a": (make, cfg), "b": (make, cfg)}, data, [1, 3], steps=1, batch_size=3,
                              progress=False)
    assert len(rows) == 4 and len(built) == 4 and len({id(m) for m in built}) == 4
    assert [(r["method"], r["labels_per_class"], r["train_videos"]) for r in rows] == [
        ("a", 1, 3), ("b", 1, 3), ("a", 3, 9), ("b", 3, 9)]
    fig = plot_label_budget(rows, chance=1 / 3)
    assert len(fig.axes[0].lines) == 3
    del fig


# ----------------------------------------------------------------------------- presets and plots

def test_presets_resolve_through_the_notebook_table():
    assert set(TRANSFER_PRESETS) == {"smoke", "cpu", "gpu"}
    assert all(isinstance(s, TransferSettings) for s in TRANSFER_PRESETS.values())
    s = vl.presets.resolve("04_transfer_learning", "cpu", TSN_EPOCHS=7, SHIFT_BUDGETS=None)
    assert s.tsn_epochs == 7 and s.shift_budgets == TRANSFER_PRESETS["cpu"].shift_budgets
    smoke, cpu = TRANSFER_PRESETS["smoke"], TRANSFER_PRESETS["cpu"]
    assert smoke.shift_steps < cpu.shift_steps and smoke.tsn_epochs <= cpu.tsn_epochs


def test_plot_pair_confusions_has_a_panel_per_model_and_pair():
    prob, label = _scores([(k, {k: 1.0}) for k in range(len(CLASSES))])
    result = {"predictions": {"prob": prob, "label": label}}
    fig = plot_pair_confusions({"TSN": result, "TSM": result}, CLASSES)
    assert len(fig.axes) == 2 * len(DIRECTION_PAIRS)
    assert fig.axes[0].get_title() == "pair accuracy 1.00"
    del fig


def test_image_backbone_small_input_stem_keeps_twice_the_resolution():
    images = torch.randn(2, 3, 32, 32)
    plain = image_backbone("test_resnet").eval()
    small = image_backbone("test_resnet", small_input_stem=True).eval()
    assert plain.forward_features(images).shape[-1] * 2 == small.forward_features(images).shape[-1]
    with pytest.raises(ValueError, match="max-pool"):
        image_backbone("test_vit", small_input_stem=True)


def test_image_weights_load_without_the_stem_max_pool():
    # notebook 04 runs the image model's weights in a TSM without the max-pool (it has no weights)
    plain = image_backbone("test_resnet")
    small = image_backbone("test_resnet", small_input_stem=True)
    small.load_state_dict(plain.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), small.state_dict().values()))
    tsm = TSM(small, num_classes=3, num_frames=4, img_size=32, fold_div=4)
    assert tsm(torch.randn(2, 3, 4, 32, 32)).shape == (2, 3)
    assert all(m.fold_div == 4 for m in tsm.modules() if isinstance(m, TemporalShift))


def test_load_domain_names_an_unknown_domain():
    with pytest.raises(ValueError, match="domain must be one of A, B"):
        load_domain("/nonexistent", "C", TRANSFER_PRESETS["smoke"])


@pytest.mark.parametrize("arch", ["tsm", "i3d"])
def test_save_video_model_rebuilds_the_same_network_alone(arch, tmp_path):
    torch.manual_seed(0)
    image = image_backbone("test_resnet", small_input_stem=arch == "tsm")
    kw = dict(num_classes=3, num_frames=4, img_size=32, drop_rate=0.0)
    model = TSM(image, fold_div=4, **kw) if arch == "tsm" else I3D(image, **kw)
    extra = {"fold_div": 4} if arch == "tsm" else {}
    path = save_video_model(model, tmp_path / "m.pt", backbone="test_resnet", classes=["a", "b", "c"],
                            frame_stride=4, small_input_stem=arch == "tsm", drop_rate=0.0, **extra)
    loaded, info = vl.models.load_model(path, with_info=True)
    x = torch.randn(2, 3, 4, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert info.class_names == ["a", "b", "c"] and info.frame_stride == 4 and info.name == f"test_{arch}"
    with pytest.raises(TypeError, match="TSN, TSM or I3D"):
        save_video_model(torch.nn.Linear(2, 2), tmp_path / "x.pt", backbone="test_resnet", classes=[], frame_stride=1)
