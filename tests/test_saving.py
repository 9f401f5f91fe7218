"""save_model / load_model: one self-contained, weights-only file per model."""
from __future__ import annotations

import pickle

import pytest
import torch

import vidlab.models as vm


@pytest.mark.parametrize("name,kwargs", [("vit_test", {"global_pool": "max"}), ("test_x3d", {}), ("test_tsm", {})])
def test_roundtrip_rebuilds_the_same_model(tmp_path, name, kwargs):
    model = vm.create_model(name, num_classes=5, **kwargs).eval()
    path = vm.save_model(model, tmp_path / "m.pt", class_names=list("abcde"), meta={"top1": 0.5})
    loaded, info = vm.load_model(path, with_info=True)
    size = info.img_size
    clips = torch.rand(2, 3, info.num_frames, size, size)
    with torch.no_grad():
        assert torch.equal(model(clips), loaded(clips))
    assert info.name == name and info.kwargs == {"num_classes": 5, **kwargs}
    assert loaded.class_names == list("abcde") and info.meta == {"top1": 0.5}
    assert loaded.clip_geometry["num_frames"] == model.default_cfg["num_frames"]


def test_refuses_other_files_and_pickles(tmp_path):
    torch.save({"state_dict": {}}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a model file"):
        vm.load_model(tmp_path / "plain.pt")

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"format": "vidlab-model", "x": Evil()}))
    with pytest.raises(ValueError, match="refused"):
        vm.load_model(tmp_path / "evil.pt")


def test_model_not_from_registry_needs_a_name(tmp_path):
    with pytest.raises(ValueError, match="create_model"):
        vm.save_model(torch.nn.Linear(2, 2), tmp_path / "x.pt", num_frames=4, img_size=32)


def test_normalized_wrapper_takes_unit_range_clips():
    model = vm.create_model("vit_test", num_classes=3).eval()
    wrapped = vm.Normalized(model, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)).eval()
    clips = torch.rand(1, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(wrapped(clips), model((clips - 0.5) / 0.25))
