"""Notebook 09 (distributed training): settings per preset, lessons, and the runs it launches.

Every run is the real command line, ``python -m vidlab train`` alone or under ``torchrun``,
started as a subprocess whose output the notebook streams. The runs of one notebook share
everything (model, data, seed, epochs, global batch) except how many processes split each
batch, so their weights can be compared number by number.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidlab.dist import launch
from vidlab.recipes.lessons import Lesson


@dataclass(frozen=True)
class DistributedSettings:
    """09_distributed."""

    model: str = "vit_mini"  # no BatchNorm and no dropout: runs with different process counts compare exactly
    img_size: int | None = None  # clip height and width (None: the model's)
    num_frames: int | None = None  # frames per clip (None: the model's)
    max_per_class: int = 8  # videos per class of each split the runs use
    batch_size: int = 8  # per process in the 2-process runs; the single process takes twice as many
    epochs: int = 2
    optimizer: str = "sgd"  # SGD keeps the runs' rounding differences at rounding size; AdamW magnifies them
    lr: float = 0.02
    test_views: int = 2
    fsdp_model: str = "vit_mini"
    fsdp_steps: int = 2
    launch_timeout_s: int = 300  # a launched run that takes longer is stopped


PRESETS = {
    "smoke": DistributedSettings(model="vit_test", max_per_class=2, batch_size=4, epochs=1, fsdp_model="vit_test",
                                 fsdp_steps=1, launch_timeout_s=180),
    "cpu": DistributedSettings(),
    # for a box with at least 2 GPUs (one per process); with fewer the 2-process runs use the CPU
    "gpu": DistributedSettings(model="vit_small", img_size=112, num_frames=16, max_per_class=50, batch_size=16,
                               epochs=3, test_views=3, fsdp_model="vit_small", fsdp_steps=3, launch_timeout_s=600),
}

LESSONS = (
    Lesson("ddp_vs_single_max_abs_diff", "<", 1e-5, presets=("cpu",),
           why="2 processes with batch b take the same fp32 steps as 1 process with batch 2b"),
    Lesson("sharded_eval_top1", ">=", "single_eval_top1", why="gathered shards score every test video once"),
    Lesson("sharded_eval_top1", "<=", "single_eval_top1", why="gathered shards score every test video once"),
    Lesson("two_node_max_abs_diff", "<", 1e-5, presets=("cpu",),
           why="two launchers meeting at a c10d rendezvous train exactly like one launcher with two processes"),
    Lesson("fsdp_bytes_per_process", "<", "ddp_bytes_per_process", offset=0.0,
           why="FSDP keeps 1/N of parameters, gradients and optimizer state in each process"),
)


def launch_device(device: torch.device) -> tuple[str, str]:
    """The ``--device`` of the launched 2-process runs and why: CUDA only with a GPU per process."""
    if device.type == "cuda" and torch.cuda.device_count() >= 2:
        return "cuda", f"{torch.cuda.device_count()} GPUs: one per process, nccl"
    if device.type == "cuda":
        return "cpu", "one GPU cannot serve two nccl processes, so the 2-process runs use the CPU (gloo)"
    return "cpu", "no GPU: the processes run on the CPU and talk over gloo"


def train_args(data_dir: Path, out: Path, settings: DistributedSettings, *, batch_size: int, seed: int,
               device: str = "cpu") -> list[str]:
    """The ``python -m vidlab train`` arguments every run of the notebook shares (but the batch)."""
    geometry = [f"--{name.replace('_', '-')}={value}" for name in ("img_size", "num_frames")
                if (value := getattr(settings, name)) is not None]
    return ["train", "--model", settings.model, *geometry, "--data-dir", str(data_dir), "--max-per-class",
            str(settings.max_per_class), "--epochs", str(settings.epochs), "--batch-size", str(batch_size),
            "--optimizer", settings.optimizer, "--lr", str(settings.lr), "--test-views", str(settings.test_views), "--seed", str(seed),
            "--device", device, "--output-dir", str(out)]


def fresh(folder: Path) -> Path:
    """``folder`` emptied (a rerun of the notebook starts its runs again)."""
    if folder.exists():
        shutil.rmtree(folder)
    return folder


def run_metrics(folder: Path) -> dict[str, Any]:
    """The ``metrics.json`` a run wrote."""
    path = folder / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run in {folder} did not finish")
    return json.loads(path.read_text(encoding="utf-8"))


def final_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The model weights of a run's last checkpoint."""
    from vidlab.utils import load_checkpoint

    return load_checkpoint(folder / "checkpoint.pt")["model"]


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference between two state dicts with the same keys."""
    if a.keys() != b.keys():
        raise ValueError(f"different parameters: {sorted(set(a) ^ set(b))[:5]}")
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def abs_diffs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> torch.Tensor:
    """Every ``|a - b|`` of two state dicts, flattened into one vector."""
    return torch.cat([(a[k].float() - b[k].float()).abs().flatten() for k in a])


def shard_gradient_average(model: nn.Module, video: torch.Tensor, label: torch.Tensor,
                           shards: int) -> list[torch.Tensor]:
    """What DDP computes: the mean over ``shards`` equal slices of the batch of each slice's
    gradient of its own mean cross entropy. ``video``: ``(B, C, T, H, W)`` with ``B % shards == 0``."""
    if video.shape[0] % shards:
        raise ValueError(f"batch {video.shape[0]} does not split into {shards} equal shards")
    params = [p for p in model.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    for v, y in zip(video.chunk(shards), label.chunk(shards)):
        grads = torch.autograd.grad(nn.functional.cross_entropy(model(v), y), params)
        for t, g in zip(total, grads):
            t += g / shards
    return total


def run(commands: list[list[str]], *, threads: int | None, timeout: float, prefixes: list[str] | None = None,
        extra_env: dict[str, str] | None = None) -> list[launch.RunResult]:
    """Print the commands, run them at once with their output streamed, and fail loudly if one fails."""
    for cmd in commands:
        env_note = f"OMP_NUM_THREADS={threads} " if threads is not None else ""
        print("$ " + env_note + launch.display_command(cmd), flush=True)
    results = launch.run_commands(commands, env=launch.launch_env(threads, extra_env), prefixes=prefixes,
                                  timeout=timeout)
    for r in results:
        r.check()
    return results


def single_process_test(run_dir: Path, args: list[str]) -> dict[str, Any]:
    """Score a finished run's ``model.pt`` on its test split in this one process (no shards).

    ``args``: the run's ``train ...`` arguments; the test clips are built exactly as the run built them.
    """
    from vidlab.dist import cli, trainer
    from vidlab.dist.env import DistEnv
    from vidlab.models import load_model
    from vidlab.train import evaluate

    parsed = cli.build_parser().parse_args(args[1:])
    settings = cli.validate(parsed, DistEnv(), check_output=False)
    metrics = run_metrics(run_dir)
    model = load_model(run_dir / "model.pt")
    _, _, loader = trainer.build_loaders(parsed, settings, DistEnv(), metrics["num_frames"], metrics["img_size"])
    return evaluate(model, loader, device="cpu", num_classes=len(settings["classes"]), progress=True)
