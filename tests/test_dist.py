"""vidlab.dist: DDP with 2 processes on gloo, loopback only, ports picked at run time.

Launches are few (each torchrun start costs seconds): one uninterrupted 2-process run shared
by the equivalence, sharded-evaluation and resume tests, one run whose rank 1 is killed and
restarted, one whose rank 1 is killed without restarts, and one with a wrong setting.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from vidlab.dist import cli, launch, trainer
from vidlab.dist.comm import ring_allreduce, ring_allreduce_bytes
from vidlab.dist.env import DistEnv
from vidlab.dist.evaluate import _shard_summary, merge_evaluations
from vidlab.dist.sampling import SeededItems, ShardSampler, global_batch_order
from vidlab.train import evaluate, load_checkpoint_into

# 24 training videos (2 per class): 12 per process, batches of 5, 5 and 2 (an uneven last batch)
BATCH = 5
EPOCHS = 2


def _args(data: Path, out: Path, batch: int, *extra: str) -> list[str]:
    return ["--model", "vit_test", "--data-dir", str(data), "--epochs", str(EPOCHS), "--batch-size", str(batch),
            "--max-per-class", "2", "--val-split", "val", "--test-split", "test", "--test-views", "2",
            "--timeout", "30", "--output-dir", str(out), *extra]


def _torchrun(args: list[str], *, max_restarts: int = 0, timeout: float = 240) -> launch.RunResult:
    cmd = launch.torchrun_command(["train", *args], nproc_per_node=2, port=launch.free_port(),
                                  max_restarts=max_restarts)
    return launch.run_command(cmd, env=launch.launch_env(threads=1), echo=False, timeout=timeout)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def ddp_run(smoke_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    result = _torchrun(_args(smoke_data, out, BATCH))
    assert result.ok, result.output[-3000:]
    return out, result


# --------------------------------------------------------------------------- without processes


def test_two_processes_take_the_steps_of_one_with_twice_the_batch():
    for epoch in (0, 1):
        two = global_batch_order(24, batch_size=5, num_replicas=2, seed=3, epoch=epoch)
        one = global_batch_order(24, batch_size=10, num_replicas=1, seed=3, epoch=epoch)
        assert two == one and [len(s) for s in one] == [10, 10, 4]
    assert global_batch_order(24, batch_size=10, num_replicas=1, seed=3, epoch=0) != one  # epochs reshuffle


class _Noise(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.rand(3)


def test_item_augmentation_depends_on_seed_epoch_and_index_only():
    items = SeededItems(_Noise(), seed=7)
    first = items[(0, 4)]
    torch.rand(100)  # another process / worker would have drawn other numbers before
    assert torch.equal(items[(0, 4)], first)
    assert not torch.equal(items[(1, 4)], first) and not torch.equal(items[(0, 5)], first)
    state = torch.get_rng_state()
    items[(0, 1)]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched


def test_ring_allreduce_sums_and_sends_two_n_minus_one_over_n():
    tensors = [torch.randn(12) for _ in range(4)]
    results, sent = ring_allreduce(tensors)
    for r in results:
        torch.testing.assert_close(r, sum(tensors))
    assert sent == [ring_allreduce_bytes(12 * 4, 4)] * 4 == [72.0] * 4


class _Clips(Dataset):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 4, 8, 8, generator=g)
        self.y = torch.randint(0, 3, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"video": self.x[i], "label": self.y[i], "path": f"clip_{i}.mp4"}


def test_merged_shards_equal_one_process_with_an_odd_count():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 8 * 8, 3))
    data = _Clips(23)
    whole = evaluate(model, DataLoader(data, batch_size=4), device="cpu", num_classes=3, progress=False)
    shards = [_shard_summary(evaluate(model, DataLoader(data, batch_size=4, sampler=ShardSampler(23, num_replicas=2,
                                                                                                rank=r)),
                                      device="cpu", num_classes=3, progress=False), r) for r in (0, 1)]
    merged = merge_evaluations(shards, 3)
    assert merged["shard_sizes"] == [12, 11] and merged["num_videos"] == 23
    assert merged["top1"] == whole["top1"]
    assert round(merged["clip_top1"] * 23) == round(whole["clip_top1"] * 23)  # the same count of correct clips
    assert torch.equal(merged["confusion_matrix"], whole["confusion_matrix"])
    assert merged["predictions"]["path"] == whole["predictions"]["path"]  # dataset order restored


def test_wrong_settings_are_refused_before_training(smoke_data, tmp_path, capsys):
    def refused(argv, env=DistEnv()):
        with pytest.raises(cli.SettingsError) as info:
            cli.validate(cli.build_parser().parse_args(argv), env)
        return str(info.value)

    base = ["--model", "vit_test", "--data-dir", str(smoke_data), "--output-dir", str(tmp_path)]
    assert "unknown model 'vit_tset'" in refused(base + ["--model", "vit_tset"])
    assert "no manifest.csv" in refused(base + ["--data-dir", str(tmp_path / "nowhere")])
    assert "does not divide into 2" in refused(base + ["--global-batch-size", "7"], DistEnv(world_size=2))
    assert "no labelled rows in split 'tran'" in refused(base + ["--train-split", "tran"])
    (tmp_path / "checkpoint.pt").write_bytes(b"")
    assert "pass --resume" in refused(base)
    assert cli.main(base + ["--model", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


# --------------------------------------------------------------------------- with torchrun


def test_ddp_two_processes_equal_one_process_with_twice_the_batch(ddp_run, smoke_data, tmp_path):
    out, result = ddp_run
    assert "2 process(es) on cpu (backend gloo" in result.output
    single = tmp_path / "single"
    assert cli.main(_args(smoke_data, single, 2 * BATCH)) == 0
    ddp_w, one_w = _weights(out / "checkpoint.pt"), _weights(single / "checkpoint.pt")
    start = trainer.build_model(cli.build_parser().parse_args(_args(smoke_data, single, 1)),
                            {"model_kwargs": {}, "classes": list(range(12))})[0].state_dict()
    assert _max_diff(one_w, start) > 1e-4  # training moved the weights: the comparison can fail
    assert _max_diff(ddp_w, one_w) < 1e-5


def test_sharded_evaluation_equals_one_process(ddp_run, smoke_data):
    out, _ = ddp_run
    import json

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["test"]["shard_sizes"] == [12, 12]
    args = cli.build_parser().parse_args(_args(smoke_data, out, BATCH, "--resume"))
    settings = cli.validate(args, DistEnv())
    model, frames, size = trainer.build_model(args, settings)
    load_checkpoint_into(out / "checkpoint.pt", model=model, restore_rng=False)
    _, _, test_loader = trainer.build_loaders(args, settings, DistEnv(), frames, size)
    single = evaluate(model, test_loader, device="cpu", num_classes=12, progress=False)
    assert metrics["test"]["top1"] == single["top1"]
    assert metrics["test"]["num_videos"] == single["num_videos"] == 24
    assert metrics["test"]["confusion_matrix"] == single["confusion_matrix"].tolist()


def test_killed_rank_resumes_under_max_restarts_with_the_same_result(ddp_run, smoke_data, tmp_path):
    out, _ = ddp_run
    result = _torchrun(_args(smoke_data, tmp_path, BATCH, "--crash-at-epoch", "1", "--crash-rank", "1"),
                       max_restarts=1)
    assert result.ok, result.output[-3000:]
    assert "fault drill: rank 1 kills itself" in result.output and "resuming from" in result.output
    assert _max_diff(_weights(tmp_path / "checkpoint.pt"), _weights(out / "checkpoint.pt")) == 0.0


def test_killed_rank_stops_the_run_with_a_clear_error_quickly(smoke_data, tmp_path):
    cmd = launch.torchrun_command(["train", *_args(smoke_data, tmp_path, BATCH, "--crash-at-epoch", "1",
                                                   "--crash-rank", "1")], nproc_per_node=2, port=launch.free_port())
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=launch.launch_env(threads=1))
    lines, killed_at = [], None
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if "fault drill" in line and killed_at is None:
            killed_at = time.perf_counter()
    rc = proc.wait(timeout=120)
    stopped_after = time.perf_counter() - killed_at if killed_at else float("inf")
    output = "".join(lines)
    assert rc != 0 and killed_at is not None, output[-3000:]
    assert stopped_after < 60, f"the other rank ran on for {stopped_after:.0f} s"
    assert "exitcode  : -9" in output and "rank      : 1" in output  # torchrun names the dead rank
    assert not (tmp_path / "model.pt").exists()


def test_wrong_setting_under_torchrun_stops_every_process(smoke_data, tmp_path):
    t0 = time.perf_counter()
    result = _torchrun(["--model", "vit_test", "--data-dir", str(smoke_data), "--output-dir", str(tmp_path),
                        "--global-batch-size", "7"], timeout=120)
    assert result.returncode != 0
    assert "--global-batch-size 7 does not divide into 2 process(es)" in result.output
    assert time.perf_counter() - t0 < 60 and not list(tmp_path.iterdir())
