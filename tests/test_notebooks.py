"""Every notebook executed with papermill at the smoke preset, with checks on what it recorded."""
from __future__ import annotations

import math

import pytest

from vidlab import run as runner

pytestmark = pytest.mark.notebooks


def _check_01(m: dict, out) -> None:
    assert m["num_classes"] >= 10
    assert m["num_videos"] > 0
    assert m["demo_skipped"] == 2  # the truncated file and the playlist, reported not replaced
    assert m["byo_accepted"] > 0
    for key in ("decode_clips_per_s", "loader_clips_per_s"):
        assert m[key] > 0 and math.isfinite(m[key])
    assert math.isclose(m["loader_vs_decode"], m["loader_clips_per_s"] / m["decode_clips_per_s"], rel_tol=1e-6)


def _check_02(m: dict, out) -> None:
    for key in ("mae_knn_top1", "mae_probe_top1", "contrastive_probe_top1", "scratch_fewshot_top1", "pretrained_fewshot_top1"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["tube_mask_matches_library"] is True
    assert m["pretrain_seconds"] > 0
    assert math.isfinite(m["mae_loss_first"]) and math.isfinite(m["mae_loss_last"]) and m["mae_loss_last"] > 0
    assert 0.0 <= m["static_tubelet_fraction"] <= 1.0 and m["temporal_redundancy_ratio"] > 0
    assert m["copy_baseline_tube_90"] > m["copy_baseline_random_90"]  # model-free: tubes defeat copying
    assert math.isclose(m["fewshot_gain_points"], 100 * (m["pretrained_fewshot_top1"] - m["scratch_fewshot_top1"]), abs_tol=1e-6)
    from vidlab.models import load_model

    encoder = load_model(out / "ssl_encoder.pt")  # a save_model file: rebuilt from it alone
    encoder.reset_classifier(12)
    assert encoder.head.out_features == 12 and encoder.clip_geometry["num_frames"] > 0


def _check_03(m: dict, out) -> None:
    for key in ("test_top1", "scratch_top1", "top1_linear_probe", "top1_partial", "top1_bitfit", "top1_lora", "top1_adapter", "clip_top1"):
        assert 0.0 <= m[key] <= 1.0, key
    p = m["trainable_params"]
    assert p["linear_probe"] < p["bitfit"] < p["full"]
    assert p["linear_probe"] < p["lora"] < p["full"] and p["adapters"] < p["full"] and p["partial"] < p["full"]
    mem = m["memory_mib"]
    assert mem["linear_probe"] < mem["full"]  # no gradients or optimizer state for the backbone
    assert m["lora_merge_max_abs_diff"] < 1e-4
    assert m["deploy_roundtrip_identical"] is True
    from vidlab.models import load_model

    model = load_model(out / "model.pt")  # the deployable file needs no pretraining file
    assert model.class_names is not None and len(model.class_names) == model.head.out_features
    assert {r["init"] for r in m["label_efficiency"]} == {"pretrained", "scratch"}
    assert 0.0 <= m["geometry_top1"] <= 1.0
    assert m["loop_matches_fit"] is True  # the loop written out gives fit's weights
    assert model.clip_geometry["num_frames"] > 0 and model.mean is not None  # the reference classifier of 05-09
    for name in ("geometry_per_class", "predict_frames", "predict_top5"):
        assert (out / f"{name}.png").exists(), name


def _check_04(m: dict, out) -> None:
    for key in ("tsn_top1", "tsm_top1", "inflated_top1", "i3d_random_top1", "transfer_top1", "scratch_b_top1", "a_on_b_top1",
                "tsn_direction_pair_acc", "tsm_direction_pair_acc", "inflated_direction_pair_acc"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["tsm_shift_matches_library"] is True
    assert m["inflation_still_video_max_diff"] < 1e-4
    assert len(m["label_budget_curve"]) == 2  # A-trained then fine-tuned on B, and B alone
    for name in ("image_to_video_accuracy", "direction_pair_confusions", "label_budget_curve", "domains_a_and_b"):
        assert (out / f"{name}.png").exists(), name
    from vidlab.models import load_model

    for name in ("tsm", "i3d"):
        assert load_model(out / f"{name}.pt").class_names is not None, name


def _check_06(m: dict, out) -> None:
    for key in ("top1_fp32", "top1_bf16", "top1_fp16"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["fp16_scaler_matches_torch"] is True and len(m["fp16_scaler_skipped_steps"]) >= 1
    assert 0.0 <= m["fp16_underflow_fraction_scaled"] <= m["fp16_underflow_fraction_unscaled"] <= 1.0
    assert m["bf16_step_speedup"] > 0 and m["fp16_step_speedup"] > 0
    assert len(m["bf16_speedup_by_width"]) >= 2 and all(r["speedup"] > 0 for r in m["bf16_speedup_by_width"])
    assert 0.0 < m["checkpointing_memory_ratio"] < 1.0 and m["checkpointing_time_ratio"] > 0
    assert m["accumulation_max_abs_diff"] < 1e-5 < m["accumulation_max_abs_diff_batchnorm"]
    assert "addmm" in m["autocast_low_precision_ops"]
    for name in ("number_formats", "gradient_histogram", "loss_scale", "autocast_ops", "precision_comparison",
                 "bf16_speedup_by_width", "training_memory", "activation_checkpointing", "gradient_accumulation",
                 "channels_last"):
        assert (out / f"{name}.png").exists(), name


def _check_09(m: dict, out) -> None:
    assert m["grad_average_max_abs_diff"] < 1e-6
    assert m["ddp_vs_single_max_abs_diff"] < 1e-5 and m["ddp_steps"] > 0
    assert m["sharded_eval_top1"] == m["single_eval_top1"] and m["sharded_eval_confusion_equal"] is True
    assert m["two_node_ok"] is True and m["two_node_max_abs_diff"] < 1e-5
    assert m["clips_per_s_1proc"] > 0 and m["clips_per_s_2proc"] > 0 and m["threads_per_process_2proc"] == 1
    assert m["fsdp_bytes_per_process"] < m["ddp_bytes_per_process"] and m["fsdp_vs_ddp_max_abs_diff"] < 1e-5
    for name in ("allreduce_traffic", "ddp_vs_single", "throughput", "three_launches", "sharded_confusion",
                 "fsdp_vs_ddp_memory"):
        assert (out / f"{name}.png").exists(), name


def _check_05(m: dict, out) -> None:
    import torch

    from vidlab.robust import load_pixel_model

    main = ("standard", "pgd_at", "fgsm_rs")
    for name in main:
        for kind in ("clean", "fgsm", "pgd"):
            assert 0.0 <= m[f"{kind}_top1_{name}"] <= 1.0, (kind, name)
        assert m[f"seconds_{name}"] > 0
        assert set(m["corruption_top1"]["h264_crf40"]) >= set(main)
        assert isinstance(m["gradient_masking"][name]["passed"], bool)
    assert m["attack_matches_library"] is True
    assert math.isclose(m["eps"], 4 / 255) and m["pgd_eval"]["steps"] >= 1 and m["pgd_eval"]["restarts"] >= 1
    assert set(m["sparse_attack_success"]) == {"1", "8"}
    assert all(0.0 <= v <= 1.0 for v in m["sparse_attack_success"].values())
    assert {"clean", "gaussian_noise", "blur", "frame_drop", "temporal_jitter", "h264_crf40"} <= set(m["corruption_top1"])
    data = torch.load(out / "eval_clips.pt", weights_only=True)
    clips, labels = data["clips"], data["labels"]
    assert clips.ndim == 5 and clips.shape[0] == labels.shape[0] and clips.min() >= 0 and clips.max() <= 1
    for name in main:
        model = load_pixel_model(out / "models" / f"{name}.pt")
        with torch.no_grad():
            assert model(clips[:2]).shape == (2, 12)
    for name in ("accuracy_vs_eps_standard", "adversarial_clip", "sparse_and_temporal", "adversarial_training",
                 "catastrophic_overfitting", "gradient_masking_checks", "corruptions"):
        assert (out / f"{name}.png").exists(), name


def _check_07(m: dict, out) -> None:
    for model in ("vit", "cnn"):
        for key in ("top1_fp32", "top1_int8"):
            assert 0.0 <= m[key][model] <= 1.0, (key, model)
        for key in ("int8_speedup_b1", "int8_speedup_b8"):
            assert m[key][model] > 0 and math.isfinite(m[key][model]), (key, model)
        assert 0 < m["bytes_int8"][model] and 0 < m["bytes_fp32"][model]
    assert m["bytes_int8"]["vit"] < m["bytes_fp32"]["vit"]  # int8 Linear weights
    assert m["int8_vs_compiled_fp32_speedup"] > 0
    for key in ("top1_pruned_structured", "top1_student", "top1_student_kd", "top1_2to4"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["structured_speedup"] > 0 and m["unstructured_latency_ratio"] > 0
    cover = {r["op"]: r for r in m["int8_coverage"]["vit"]}
    assert cover["Linear"]["int8"] == cover["Linear"]["count"] > 0
    assert all(r["int8"] == 0 for r in m["int8_coverage"]["cnn"] if r["op"] == "Conv3d")
    assert any(r["on_front"] for r in m["pareto"]) and len(m["pareto"]) >= 10
    for r in m["pareto"]:
        assert (out / r["file"]).exists(), r["file"]  # every reported variant is saved
    import torch

    from vidlab.models import load_model

    from vidlab.compress.quantization import load_exported

    vit, info = load_model(out / "vit_fp32.pt", with_info=True)
    assert load_model(out / "cnn_fp32.pt").num_classes == load_model(out / "student_distilled.pt").num_classes == vit.num_classes
    x = torch.zeros(2, 3, info.num_frames, info.img_size, info.img_size)
    for name in ("vit_int8.pt2", "cnn_int8.pt2", "cnn_pruned.pt2"):
        assert load_exported(out / name)(x).shape == (2, vit.num_classes), name
    for name in ("starting_models", "unstructured_pruning", "structured_pruning", "quantization_latency",
                 "sparsity_2to4", "distillation", "pareto_front"):
        assert (out / f"{name}.png").exists(), name


def _check_08(m: dict, out) -> None:
    paths = {"eager", "torch.export", "torch.compile", "aoti", "onnx"}
    diffs, b1, b8 = m["export_max_abs_diff"], m["latency_ms_b1"], m["latency_ms_b8"]
    classifier = next(k for k in diffs if k.startswith("classifier"))
    assert set(diffs[classifier]) >= paths and set(b1[classifier]) >= paths and set(b8[classifier]) >= paths
    assert m["export_max_abs_diff_max"] <= 1e-4  # fp32 paths; notebook 07's int8 row (if present) differs more
    assert all(v <= 1e-4 for k, v in diffs[classifier].items() if "int8" not in k)
    assert all(v > 0 and math.isfinite(v) for model in b1.values() for v in model.values())
    assert m["best_speedup_b1"] > 0 and math.isfinite(m["best_speedup_b1"])
    for name in ("model.pt", "model.pt2", "model_aoti.pt2", "model.onnx"):
        assert (out / "export" / name).stat().st_size > 0, name
    from vidlab.infer import load_runtime

    assert load_runtime(out / "export" / "model.onnx").class_names  # the file carries its metadata
    assert m["streaming_max_abs_diff"] <= 1e-4 and 0 < m["streaming_cost_ratio"] < 1
    assert m["videos_per_s"] > 0 and m["predictor_refused"] == 2 and 0.0 <= m["predictor_top1"] <= 1.0
    assert m["batching_throughput_gain"] > 0 and m["requests_lost"] == 0
    assert all(r["sent"] == r["answered"] for r in m["batching_curve"])
    assert m["process_throughput_gain"] > 0 and m["shared_decode_speedup"] > 0
    for name in ("latency_histogram", "export_paths", "video_predictor", "streaming", "dynamic_batching",
                 "processes_vs_threads"):
        assert (out / f"{name}.png").exists(), name


CHECKS = {
    "01_data_preparation": _check_01,
    "02_self_supervised_pretraining": _check_02,
    "03_finetuning": _check_03,
    "04_transfer_learning": _check_04,
    "05_adversarial_training": _check_05,
    "06_mixed_precision": _check_06,
    "07_compression": _check_07,
    "08_inference_deployment": _check_08,
    "09_distributed": _check_09,
}


@pytest.mark.parametrize("path", runner.list_notebooks(), ids=lambda p: p.stem)
def test_notebook_smoke(path, smoke_data, tmp_path):
    result = runner.run_notebook(path, tmp_path, preset="smoke", params={"DATA_DIR": str(smoke_data)})
    assert result.status == "ok", f"{path.name} failed: {result.error} (executed copy: {result.executed})"
    assert path.stem in CHECKS, f"add checks for {path.stem} to CHECKS"
    CHECKS[path.stem](result.metrics, result.output_dir)
    assert list(result.output_dir.glob("*.png")), "a notebook saves its plots beside metrics.json"
