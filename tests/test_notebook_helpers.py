import json
import math

import pytest
import torch

import vidlab as vl
from vidlab.notebook import setup


def test_record_merges_and_is_json(tmp_path):
    vl.record("a", 1, tmp_path)
    vl.record("b", torch.tensor(0.5), tmp_path)
    vl.record("c", {"x": torch.tensor([1, 2])}, tmp_path)
    vl.record("d", math.nan, tmp_path)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {"a": 1, "b": 0.5, "c": {"x": [1, 2]}, "d": "nan"}
    assert vl.read_metrics(tmp_path)["a"] == 1


def test_setup_validates_parameters(tmp_path):
    with pytest.raises(ValueError, match="PRESET='fast'"):
        setup("x", preset="fast", data_dir=None, output_dir=tmp_path, seed=0, need_data=False)
    with pytest.raises(ValueError, match="SEED"):
        setup("x", preset="smoke", data_dir=None, output_dir=tmp_path, seed="0", need_data=False)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            setup("x", preset="smoke", data_dir=None, output_dir=tmp_path, seed=0, device="cuda", need_data=False)
    ctx = setup("x", preset="smoke", data_dir=tmp_path / "d", output_dir=tmp_path / "o", seed=3, need_data=False)
    assert ctx.output_dir.is_dir() and ctx.device.type in ("cpu", "cuda")
    vl.record("k", 1)
    assert vl.read_metrics(tmp_path / "o") == {"k": 1}


def test_set_seed_repeats():
    vl.set_seed(5)
    a = torch.rand(3)
    vl.set_seed(5)
    assert torch.equal(a, torch.rand(3))


def test_presets_resolve():
    s = vl.presets.resolve("01_data_preparation", "smoke", THROUGHPUT_CLIPS=None, STRIDE=3)
    assert s.stride == 3 and s.throughput_clips == vl.presets.table_for("01_data_preparation")["smoke"].throughput_clips
    with pytest.raises(ValueError, match="unknown setting"):
        vl.presets.resolve("01_data_preparation", "smoke", EPOCHS=1)


def test_atomic_save_and_weights_only_load(tmp_path):
    p = vl.atomic_torch_save({"w": torch.ones(2), "epoch": 3}, tmp_path / "c.pt")
    assert vl.load_checkpoint(p)["epoch"] == 3
    assert [f.name for f in tmp_path.iterdir()] == ["c.pt"]
