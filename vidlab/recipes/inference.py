"""Notebook 08 (inference and deployment): settings per preset, the lesson's thresholds, and the
few functions that stitch the lesson together (train the online TSM, time every export path,
find notebook 07's int8 model, the plots).

The library pieces live in :mod:`vidlab.infer`; this module only decides what the notebook runs.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from vidlab.recipes.lessons import Lesson

__all__ = [
    "InferenceSettings",
    "INFERENCE_PRESETS",
    "LESSONS",
    "load_stream_data",
    "train_online_tsm",
    "time_paths",
    "export_rows",
    "find_int8_model",
    "plot_export_paths",
    "plot_stream",
    "plot_batching",
]


@dataclass(frozen=True)
class InferenceSettings:
    """08_inference_deployment settings (one per preset)."""

    paths: tuple[str, ...] = ("eager", "torch.export", "torch.compile", "aoti", "onnx")  # export paths of the classifier
    tsm_paths: tuple[str, ...] = ("eager", "torch.export", "aoti", "onnx")  # ... of the online TSM (compile: time)
    dynamic_compile: bool = False  # torch.compile one graph with a symbolic batch (True) or one per batch size
    big_batch: int = 8  # the second batch size of the export table
    latency_rounds: int = 4  # timed calls per configuration: latency_rounds x latency_repeats, interleaved
    latency_repeats: int = 10
    window: int = 16  # frames the online TSM sees (and the window re-run baseline re-runs)
    tsm_backbone: str = "test_resnet"  # timm ResNet inside the online TSM
    tsm_small_input_stem: bool = True  # drop the stem max-pool (more pixels of tiny frames, 4x the compute)
    tsm_img_size: int = 56  # frame size fed to the online TSM (per-frame work large enough that overhead does not set its cost)
    tsm_fold_div: int = 4  # 1/fold_div of each block's channels come from the previous frame
    tsm_train_frames: int = 8  # frames per training clip (the weights do not depend on the clip length)
    tsm_stride: int = 4  # the model sees every tsm_stride-th frame, in training clips and in the stream
    tsm_train_per_class: int | None = None  # training videos per class (None: all)
    tsm_epochs: int = 8  # training epochs of the online TSM
    tsm_lr: float = 8e-3  # AdamW peak learning rate (1 warm-up epoch, cosine)
    tsm_batch_size: int = 16
    stream_videos: int = 4  # test videos streamed frame by frame
    predict_videos: int = 96  # test videos for the video-level predictor
    views: int = 3  # clips per video whose probabilities are averaged
    predict_batch: int = 8  # clips per model call in the predictor
    batching_requests: int = 240  # requests per dynamic-batching load test
    batching_max_batch: int = 8
    batching_waits_ms: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0, 10.0, 20.0)  # max waits on the curve
    batching_load: float = 4.0  # arrival rate as a multiple of what batch-1 serving can answer
    scaling_batches: int = 40  # batch-1 calls per process in the processes-vs-threads measurement
    decode_workers: int = 2  # processes decoding the training videos into memory


INFERENCE_PRESETS: dict[str, InferenceSettings] = {
    "smoke": InferenceSettings(tsm_paths=("eager", "torch.export", "onnx"), dynamic_compile=True, big_batch=4,
                               latency_rounds=2, latency_repeats=4, window=8, tsm_train_frames=4,
                               tsm_img_size=32, tsm_small_input_stem=False, tsm_epochs=1, stream_videos=1, predict_videos=8, views=1, batching_requests=40,
                               batching_waits_ms=(0.0, 5.0), scaling_batches=4, decode_workers=1),
    "cpu": InferenceSettings(),
    "gpu": InferenceSettings(tsm_paths=("eager", "torch.export", "torch.compile", "aoti", "onnx"), big_batch=32, latency_rounds=5, latency_repeats=20, tsm_backbone="resnet18",
                             tsm_img_size=112, tsm_small_input_stem=False, tsm_train_frames=16, tsm_stride=2,
                             tsm_epochs=10, tsm_lr=1e-3,
                             tsm_batch_size=32, predict_videos=400, batching_requests=1000, scaling_batches=100,
                             decode_workers=8),
}

# What notebook 08's run must show (checked by ``python -m vidlab run --check``)
LESSONS = (
    Lesson("best_speedup_b1", ">=", 1.3, why="an exported or compiled path beats eager PyTorch at batch 1"),
    Lesson("export_max_abs_diff_max", "<=", 1e-4, why="every fp32 export path computes what eager computes"),
    Lesson("streaming_cost_ratio", "<=", 0.25,
           why="with the temporal cache a new frame costs a fraction of re-running the window"),
    Lesson("streaming_max_abs_diff", "<=", 1e-4, why="the cached stream outputs what the causal clip model outputs"),
    Lesson("batching_throughput_gain", ">", 1.0, why="grouping requests answers more of them per second"),
    Lesson("requests_lost", "<=", 0, presets=("smoke", "cpu", "gpu"), why="the batcher never drops a request"),
)


def load_stream_data(data_dir: str | os.PathLike, settings: InferenceSettings, *, progress: bool = True) -> Any:
    """Train / val / test clips of ``tsm_train_frames`` frames, ``tsm_stride`` apart (the stream then
    passes on every ``tsm_stride``-th frame), at ``tsm_img_size``, decoded once
    (:func:`vidlab.data.clips.load_clip_data`); at most ``tsm_train_per_class`` training videos per class."""
    from vidlab.data.clips import load_clip_data

    data = load_clip_data(data_dir, num_frames=settings.tsm_train_frames, stride=settings.tsm_stride,
                          size=settings.tsm_img_size,
                          test_views=2, crop_scale=(0.8, 1.0), color_jitter=0.0, workers=settings.decode_workers,
                          progress=progress)
    if settings.tsm_train_per_class is not None:
        data = data.with_train_budget(settings.tsm_train_per_class)
    return data


def train_online_tsm(data: Any, settings: InferenceSettings, *, seed: int = 0, device: torch.device | str = "cpu",
                     progress: bool = True) -> dict[str, Any]:
    """Train an online (causal) TSM (:class:`vidlab.models.OnlineTSM`) on ``data`` with the preset's recipe.

    Returns ``train_and_test``'s dict (``test_top1``, ``history``, ``train_seconds``, ...) plus ``model``
    (eval mode) and ``classes``.
    """
    from vidlab.models import create_model, is_model
    from vidlab.recipes.supervised import train_and_test
    from vidlab.train.engine import TrainConfig

    torch.manual_seed(seed)
    name = f"tsm_online_{settings.tsm_backbone}" if is_model(f"tsm_online_{settings.tsm_backbone}") else "test_tsm_online"
    model = create_model(name, num_classes=data.num_classes, backbone=settings.tsm_backbone,
                         num_frames=settings.tsm_train_frames, img_size=settings.tsm_img_size,
                         fold_div=settings.tsm_fold_div,
                         small_input_stem=settings.tsm_small_input_stem, drop_rate=0.2)
    cfg = TrainConfig(epochs=settings.tsm_epochs, lr=settings.tsm_lr, weight_decay=0.05,
                      warmup_epochs=min(1.0, settings.tsm_epochs / 2), clip_grad_norm=1.0, seed=seed)
    result = train_and_test(model, data, cfg, device=device, batch_size=settings.tsm_batch_size, progress=progress)
    model.eval()
    result.update(model=model, classes=list(data.classes))
    return result


def time_paths(paths: Mapping[str, Any], clip_shape: Sequence[int], batches: Sequence[int], settings: InferenceSettings,
               *, progress: bool = True) -> dict[int, dict[str, Any]]:
    """``{batch: {path name: Latency}}`` of every built path (:func:`vidlab.infer.build_paths`) on random
    clips ``(batch, *clip_shape)``, timed interleaved (:func:`vidlab.compress.compare_latency`)."""
    from tqdm.auto import tqdm

    from vidlab.compress.latency import compare_latency

    out = {}
    for batch in tqdm(list(batches), desc="timing paths", disable=not progress):
        clips = torch.randn(batch, *clip_shape)
        out[batch] = compare_latency({name: path.fn for name, path in paths.items()}, clips, warmup=2,
                                     repeats=settings.latency_rounds * settings.latency_repeats)
    return out


def export_rows(model_name: str, paths: Mapping[str, Any], latency: Mapping[int, Mapping[str, Any]],
                diffs: Mapping[str, float]) -> list[dict[str, Any]]:
    """One table row per path: build seconds, file size, max |diff| to eager, latency at each batch, speed-up."""
    batches = sorted(latency)
    rows = []
    for name, path in paths.items():
        row = {"model": model_name, "path": name, "build_s": path.build_s, "size_mb": path.size_mb,
               "max_abs_diff": diffs[name]}
        for b in batches:
            row[f"b{b}_ms"] = latency[b][name].median_ms
            row[f"b{b}_speedup"] = latency[b]["eager"].median_ms / latency[b][name].median_ms
        row["first_call_ms"] = latency[batches[0]][name].first_call_ms
        rows.append(row)
    return rows


def find_int8_model(output_dir: str | os.PathLike) -> Path | None:
    """Notebook 07's int8 classifier beside this run (``OUTPUT_DIR/../07_compression``): a file whose
    name holds ``int8`` that :func:`vidlab.infer.load_runtime` recognises, the ViT's ``.pt2`` first;
    ``None`` when there is none."""
    from vidlab.infer.runtime import ModelFileError, detect_kind

    folder = Path(output_dir).parent / "07_compression"
    if not folder.is_dir():
        return None
    for path in sorted(folder.rglob("*int8*"), key=lambda p: (not p.name.startswith("vit"), p.suffix != ".pt2", p.name)):
        if path.suffix in (".pt", ".pt2", ".onnx") and path.is_file():
            try:
                detect_kind(path)
            except ModelFileError:
                continue
            return path
    return None


# ------------------------------------------------------------------------------------------ plots

def plot_export_paths(rows: Sequence[Mapping[str, Any]], big_batch: int):
    """Batch-1 and batch-``big_batch`` latency of every path, one group of bars per model."""
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    names = list(dict.fromkeys(r["path"] for r in rows))
    color = {name: f"C{i}" for i, name in enumerate(names)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, batch in zip(axes, (1, big_batch)):
        start = 0
        for model in models:
            sub = [r for r in rows if r["model"] == model]
            xs = np.arange(len(sub)) + start
            start += len(sub) + 1
            bars = ax.bar(xs, [r[f"b{batch}_ms"] for r in sub], color=[color[r["path"]] for r in sub])
            for x, r, bar in zip(xs, sub, bars):
                ax.text(x, bar.get_height(), f"{r[f'b{batch}_speedup']:.1f}x", ha="center", va="bottom", fontsize=7)
            ax.text(xs.mean(), -0.12, model, transform=ax.get_xaxis_transform(), ha="center", fontsize=9)
        ax.set_xticks([])
        ax.set_ylabel("median latency (ms)")
        ax.set_title(f"batch {batch} (label: speed-up over eager)")
    axes[1].legend([plt.Rectangle((0, 0), 1, 1, color=color[n]) for n in names], names, fontsize=8)
    fig.tight_layout()
    return fig


def plot_stream(frames: np.ndarray, times: np.ndarray, probs: Mapping[str, np.ndarray], classes: Sequence[str],
                label: int, every: int = 4):
    """Frames of the stream on top; below, the probability of the true class and of the top rival
    after every frame, for each way of running (``probs``: ``{name: (N, K)}``)."""
    import matplotlib.pyplot as plt

    shown = list(range(0, len(frames), every))
    fig = plt.figure(figsize=(11, 4.2))
    grid = fig.add_gridspec(2, len(shown), height_ratios=[1, 2.2], hspace=0.35)
    for i, idx in enumerate(shown):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(frames[idx])
        ax.set_axis_off()
        ax.set_title(f"{times[idx]:.2f}s", fontsize=7)
    ax = fig.add_subplot(grid[1, :])
    for k, (name, p) in enumerate(probs.items()):
        ax.plot(times, p[:, label], color=f"C{k}", lw=2, label=f"{name}: {classes[label]} (true)")
        rival = p.copy()
        rival[:, label] = -1
        ax.plot(times, rival.max(1), color=f"C{k}", lw=1, ls="--", label=f"{name}: best other class")
    ax.set_xlabel("time in the stream (s)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2)
    return fig


def plot_batching(rows: Sequence[Mapping[str, Any]]):
    """Throughput against p95 latency, one point per max wait (labelled) and the no-batching point."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for r in rows:
        single = r["max_batch"] == 1
        ax.scatter(r["p95_ms"], r["throughput"], color="C3" if single else "C0", s=40)
        text = "no batching" if single else f"{r['max_wait_ms']:g} ms"
        ax.annotate(text, (r["p95_ms"], r["throughput"]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    batched = sorted((r for r in rows if r["max_batch"] > 1), key=lambda r: r["max_wait_ms"])
    ax.plot([r["p95_ms"] for r in batched], [r["throughput"] for r in batched], color="C0", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("p95 latency (ms, log)")
    ax.set_ylabel("answered requests / s")
    ax.set_title("dynamic batching: max wait on each point", fontsize=9)
    fig.tight_layout()
    return fig
