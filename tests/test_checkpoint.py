"""Checkpoints: round trip, primitives only, malicious pickles refused, crash-safe saves, exact resume."""
from __future__ import annotations

import dataclasses
import os
import pickle
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import vidlab
from vidlab.train import (
    TrainConfig,
    build_optimizer,
    cosine_with_warmup,
    fit,
    load_checkpoint_into,
    save_checkpoint,
)

HELPER = Path(__file__).with_name("_train_subprocess.py")
sys.path.insert(0, str(HELPER.parent))
from _train_subprocess import RandomClips, TinyNet  # noqa: E402


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def _trained_objects():
    torch.manual_seed(0)
    model = TinyNet()
    optimizer = build_optimizer(model, lr=1e-2, weight_decay=0.01)
    scheduler = cosine_with_warmup(optimizer, warmup_steps=2, total_steps=10)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x, y = torch.randn(4, 3, 4, 8, 8), torch.tensor([0, 1, 2, 0])
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        scheduler.step()
    return model, optimizer, scheduler, scaler


def test_round_trip_restores_model_optimizer_scheduler_scaler_and_rng(tmp_path):
    model, optimizer, scheduler, scaler = _trained_objects()
    cfg = TrainConfig(epochs=3, lr=1e-2)
    generator = torch.Generator().manual_seed(42)
    generator.manual_seed(99)
    path = save_checkpoint(tmp_path / "ckpt.pt", model=model, optimizer=optimizer, scheduler=scheduler,
                           scaler=scaler, epoch=2, step=3, config=cfg, history={"train_loss": [1.0, 0.5]},
                           extra={"note": "hello", "tensor": torch.ones(2)}, generator=generator)
    expected_draws = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=generator))
    saved_model, saved_opt = _state(model), optimizer.state_dict()
    saved_sched, saved_scale = scheduler.state_dict(), scaler.get_scale()

    torch.manual_seed(1234)
    fresh, fresh_scaler = TinyNet(), torch.amp.GradScaler("cpu")
    fresh_opt = build_optimizer(fresh, lr=1.0, weight_decay=0.0)
    fresh_sched = cosine_with_warmup(fresh_opt, warmup_steps=2, total_steps=10)
    fresh_gen = torch.Generator().manual_seed(0)
    checkpoint = load_checkpoint_into(path, model=fresh, optimizer=fresh_opt, scheduler=fresh_sched,
                                      scaler=fresh_scaler, generator=fresh_gen)

    _assert_same_weights(_state(fresh), saved_model)
    assert fresh_opt.state_dict()["param_groups"] == saved_opt["param_groups"]
    for key, value in saved_opt["state"][0].items():
        assert torch.equal(torch.as_tensor(fresh_opt.state_dict()["state"][0][key]), torch.as_tensor(value))
    assert fresh_sched.state_dict() == saved_sched
    assert fresh_scaler.get_scale() == saved_scale == 1024.0
    assert (checkpoint["epoch"], checkpoint["step"]) == (2, 3)
    assert checkpoint["config"] == dataclasses.asdict(cfg) | {"betas": [0.9, 0.999]}
    assert TrainConfig.from_dict(checkpoint["config"]) == cfg
    assert checkpoint["extra"]["note"] == "hello"
    # the random streams continue exactly where they were at save time
    assert torch.equal(torch.rand(3), expected_draws[0])
    assert np.array_equal(np.random.rand(3), expected_draws[1])
    assert random.random() == expected_draws[2]
    assert torch.equal(torch.rand(2, generator=fresh_gen), expected_draws[3])


def test_checkpoint_holds_only_tensors_and_primitives(tmp_path):
    model, optimizer, scheduler, scaler = _trained_objects()
    path = save_checkpoint(tmp_path / "c.pt", model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                           epoch=0, step=3, config=TrainConfig())
    raw = torch.load(path, weights_only=True)  # would raise on any non-allow-listed object
    assert raw["format"] == "vidlab-train-checkpoint"
    assert isinstance(raw["rng"]["python"]["state"], list)
    assert isinstance(raw["rng"]["numpy"]["keys"], torch.Tensor)


def test_non_primitive_values_are_rejected_before_writing(tmp_path):
    class Opaque:
        pass

    with pytest.raises(TypeError, match=r"extra\['thing'\]"):
        save_checkpoint(tmp_path / "c.pt", model=TinyNet(), epoch=0, step=0, extra={"thing": Opaque()})
    assert not (tmp_path / "c.pt").exists()


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a harmless stand-in for ``os.system``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch_save", "raw_pickle"])
def test_malicious_pickle_is_refused_and_not_run(tmp_path, writer):
    control_marker = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(_Payload(control_marker)))  # a plain unpickle DOES run the payload
    assert control_marker.exists()

    marker = tmp_path / "pwned_marker"
    path = tmp_path / "evil.pt"
    payload = {"format": "vidlab-train-checkpoint", "model": _Payload(marker)}
    if writer == "torch_save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match="refused to load"):
        load_checkpoint_into(path, model=TinyNet())
    assert not marker.exists()


def test_foreign_file_is_not_taken_for_a_checkpoint(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a vidlab training checkpoint"):
        load_checkpoint_into(tmp_path / "other.pt", model=TinyNet())


def test_failed_save_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    model = TinyNet()
    save_checkpoint(path, model=model, epoch=0, step=1)
    good = _state(model)
    original_save = torch.save

    def crash_halfway(obj, f, *args, **kwargs):
        import io

        buffer = io.BytesIO()
        original_save(obj, buffer, *args, **kwargs)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise KeyboardInterrupt("simulated crash in the middle of a checkpoint write")

    monkeypatch.setattr(torch, "save", crash_halfway)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, model=model, epoch=1, step=2)
    monkeypatch.undo()

    restored = TinyNet()
    checkpoint = load_checkpoint_into(path, model=restored, restore_rng=False)
    assert checkpoint["epoch"] == 0
    _assert_same_weights(_state(restored), good)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]  # the temp file was cleaned up


@pytest.mark.parametrize("patience", [None, 5])
def test_resume_after_crash_in_process_matches_uninterrupted(tmp_path, patience):
    """A run that dies right after its epoch-1 checkpoint, resumed, ends with identical weights and history
    (with early stopping on, the best weights travel inside the checkpoint and are restored at the end)."""
    cfg = TrainConfig(epochs=3, lr=3e-3, weight_decay=0.01, warmup_steps=2, seed=3, accum_steps=2,
                      early_stopping_patience=patience)
    histories = []

    def run(checkpoint: Path, *, crash_after: int | None = None, resume: bool = False) -> TinyNet:
        torch.manual_seed(0)
        model = TinyNet()
        loader = DataLoader(RandomClips(32), batch_size=8, shuffle=True, generator=torch.Generator())
        val = DataLoader(RandomClips(8, seed=7), batch_size=8)

        def on_epoch_end(epoch, history):
            if epoch == crash_after:
                raise RuntimeError("simulated crash")

        histories.append(fit(model, loader, val, cfg, device="cpu", checkpoint_path=checkpoint, resume=resume,
                             progress=False, on_epoch_end=on_epoch_end))
        return model

    reference = _state(run(tmp_path / "ref.pt"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(tmp_path / "crash.pt", crash_after=1)
    assert vidlab.load_checkpoint(tmp_path / "crash.pt")["epoch"] == 1
    torch.manual_seed(777)  # whatever the global state is, the checkpoint restores it
    resumed = _state(run(tmp_path / "crash.pt", resume=True))
    _assert_same_weights(resumed, reference)
    reference_history, resumed_history = histories[0].as_dict(), histories[1].as_dict()
    for key in ("epoch_seconds",):  # wall-clock times differ, everything else must not
        reference_history.pop(key), resumed_history.pop(key)
    assert resumed_history == reference_history
    if patience is not None:
        assert "best_state" in vidlab.load_checkpoint(tmp_path / "crash.pt")["extra"]


# ---------------------------------------------------------------- real processes, real SIGKILL


def _spawn(*args: str, cwd: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, str(HELPER), *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _read_until(proc: subprocess.Popen, wanted: str, timeout: float = 60.0) -> list[str]:
    """Read ``proc``'s stdout lines until one equals ``wanted``; returns the lines read."""
    lines: list[str] = []
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
            if lines[-1] == wanted:
                return lines
    finally:
        selector.unregister(proc.stdout)
    proc.kill()
    raise AssertionError(f"never saw {wanted!r}; output so far:\n" + "\n".join(lines))


def _finish(proc: subprocess.Popen, timeout: float = 90.0) -> list[str]:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"helper failed ({proc.returncode}):\n{out}"
    return out.splitlines()


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_gives_identical_weights(tmp_path):
    reference = _spawn("--checkpoint", "ref.pt", "--out", "ref_final.pt", cwd=tmp_path)
    victim = _spawn("--checkpoint", "run.pt", "--out", "run_final.pt", "--sleep", "0.5", cwd=tmp_path)
    try:
        _read_until(victim, "CHECKPOINT epoch=1")
        time.sleep(0.2)  # inside epoch 2 (6 batches x 0.5 s)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
    assert victim.returncode == -signal.SIGKILL
    assert not (tmp_path / "run_final.pt").exists()
    saved_epoch = vidlab.load_checkpoint(tmp_path / "run.pt")["epoch"]
    assert saved_epoch in (1, 2)  # 1 unless this process was starved for seconds

    resumed_lines = _finish(_spawn("--checkpoint", "run.pt", "--out", "run_final.pt", "--resume", cwd=tmp_path))
    reference_lines = _finish(reference)
    assert [ln for ln in resumed_lines if ln.startswith("CHECKPOINT")] == [
        f"CHECKPOINT epoch={e}" for e in range(saved_epoch + 1, 4)]
    assert reference_lines[-1] == "DONE"
    resumed = torch.load(tmp_path / "run_final.pt", weights_only=True)
    uninterrupted = torch.load(tmp_path / "ref_final.pt", weights_only=True)
    _assert_same_weights(resumed, uninterrupted)


@pytest.mark.slow
def test_sigkill_during_checkpoint_write_keeps_previous_checkpoint(tmp_path):
    proc = _spawn("--mode", "save-loop", "--checkpoint", "ckpt.pt", "--sleep", "5", cwd=tmp_path)
    try:
        _read_until(proc, "SAVED 1")
        _read_until(proc, "HALFWAY 2")  # the third file is half written and stalls for 5 s
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    leftovers = [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]
    assert len(leftovers) == 1, f"expected the half-written temp file, found {sorted(os.listdir(tmp_path))}"
    model = nn.Linear(512, 512)
    checkpoint = load_checkpoint_into(tmp_path / "ckpt.pt", model=model, restore_rng=False)
    assert checkpoint["epoch"] == 1 and checkpoint["extra"]["index"] == 1
    assert torch.all(model.weight == 1.0)


def test_resuming_with_a_changed_config_warns(tmp_path):
    data = DataLoader(RandomClips(8), batch_size=8)
    fit(TinyNet(), data, data, TrainConfig(epochs=1, lr=1e-3), device="cpu", checkpoint_path=tmp_path / "c.pt",
        progress=False)
    with pytest.warns(UserWarning, match="different TrainConfig \\(epochs, lr\\)"):
        history = fit(TinyNet(), data, data, TrainConfig(epochs=2, lr=5e-3), device="cpu",
                      checkpoint_path=tmp_path / "c.pt", resume=True, progress=False)
    assert history.epoch == [0, 1]  # epoch 0 came from the checkpoint
