"""Notebook 03's reference classifier: built once at the preset, found afterwards."""
from __future__ import annotations

import types

import torch

from vidlab.models import load_model
from vidlab.recipes import reference


def test_reference_classifier_builds_then_reuses(smoke_data, tmp_path, capsys):
    ctx = types.SimpleNamespace(output_dir=tmp_path / "07_compression", data_dir=smoke_data, preset="smoke",
                                seed=0, device=torch.device("cpu"))
    path = reference.reference_classifier(ctx, epochs=1, progress=False)
    assert path == tmp_path / "03_finetuning" / "model.pt"
    assert "training notebook 03's reference" in capsys.readouterr().out

    model, info = load_model(path, with_info=True)
    geometry = reference.reference_geometry("smoke")
    assert model.tubelet_size == geometry.num_frames and model.patch_size == 4 and model.global_pool == "max"
    assert info.meta["preset"] == "smoke" and len(info.class_names) == model.num_classes
    clip = torch.randn(2, 3, info.num_frames, info.img_size, info.img_size)
    assert model(clip).shape == (2, model.num_classes)

    stamp = path.stat().st_mtime_ns
    assert reference.reference_classifier(ctx, epochs=1, progress=False) == path
    assert "training" not in capsys.readouterr().out
    assert path.stat().st_mtime_ns == stamp  # found, not rebuilt


def test_reference_file_of_another_preset_is_not_used(tmp_path):
    from vidlab.models import create_model, save_model

    path = tmp_path / "model.pt"
    assert reference._usable(path, "cpu") == (False, "missing")
    save_model(create_model("vit_test", num_classes=3), path, meta={"preset": "smoke"})
    assert reference._usable(path, "smoke") == (True, "found")
    ok, why = reference._usable(path, "cpu")
    assert not ok and "smoke" in why
