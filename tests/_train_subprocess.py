"""Helper process for tests/test_checkpoint.py (not a test module itself).

``--mode train``: a tiny 3D-conv model on random tensors for a few epochs with
``vidlab.train.fit``; prints ``CHECKPOINT epoch=N`` after each epoch's checkpoint and
saves the final weights to ``--out``. Run it again with ``--resume`` after a kill.

``--mode save-loop``: writes a large checkpoint to the same path again and again with a
deliberately slow writer, printing ``HALFWAY i`` while file ``i`` is half written and
``SAVED i`` once it is in place; from file 2 on it stalls ``--sleep`` seconds half way, so
the test can SIGKILL it in the middle of a save.
"""
from __future__ import annotations

import argparse
import io
import sys
import time

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from vidlab.train import TrainConfig, default_step, fit, save_checkpoint

NUM_CLASSES = 3


class RandomClips(Dataset):
    """Fixed random clips ``(C=3, T=4, H=8, W=8)`` with a random horizontal flip per fetch."""

    def __init__(self, n: int, seed: int = 123) -> None:
        g = torch.Generator().manual_seed(seed)
        self.videos = torch.randn(n, 3, 4, 8, 8, generator=g)
        self.labels = torch.randint(0, NUM_CLASSES, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        video = self.videos[i]
        if torch.rand(()) < 0.5:  # consumes the global torch RNG, like a real augmentation
            video = video.flip(-1)
        return {"video": video, "label": self.labels[i], "path": f"clip_{i}.mp4"}


class TinyNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.num_classes = NUM_CLASSES
        self.conv = nn.Conv3d(3, 8, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(8)
        self.drop = nn.Dropout(0.2)  # consumes the RNG during training
        self.head = nn.Linear(8, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.conv(x))).mean(dim=(2, 3, 4))
        return self.head(self.drop(x))


def train(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    model = TinyNet()
    train_loader = DataLoader(RandomClips(48), batch_size=8, shuffle=True, generator=torch.Generator())
    val_loader = DataLoader(RandomClips(16, seed=7), batch_size=8)
    cfg = TrainConfig(epochs=args.epochs, lr=3e-3, weight_decay=0.01, warmup_steps=3, seed=5,
                      label_smoothing=0.1, clip_grad_norm=1.0, accum_steps=2)

    def on_epoch_end(epoch: int, history) -> None:
        print(f"CHECKPOINT epoch={epoch}", flush=True)

    def slow_step(model, batch, ctx):  # leaves time to be killed in the middle of an epoch
        time.sleep(args.sleep)
        return default_step(model, batch, ctx)

    fit(model, train_loader, val_loader, cfg, device="cpu", checkpoint_path=args.checkpoint, resume=args.resume,
        progress=False, on_epoch_end=on_epoch_end, step_fn=slow_step)
    torch.save(model.state_dict(), args.out)
    print("DONE", flush=True)


def save_loop(args: argparse.Namespace) -> None:
    original_save = torch.save
    state = {"index": 0}

    def slow_save(obj, f, *a, **kw):  # serialise, then write in small chunks, slowly
        buffer = io.BytesIO()
        original_save(obj, buffer, *a, **kw)
        data = buffer.getvalue()
        chunk = max(1, len(data) // 20)
        for offset in range(0, len(data), chunk):
            f.write(data[offset: offset + chunk])
            if offset <= len(data) // 2 < offset + chunk:
                f.flush()
                print(f"HALFWAY {state['index']}", flush=True)
                if state["index"] >= 2:
                    time.sleep(args.sleep)  # a stalled write: the test kills the process here
            time.sleep(0.01)

    torch.save = slow_save
    model = nn.Linear(512, 512)  # ~1 MB of weights
    for index in range(1000):
        state["index"] = index
        with torch.no_grad():
            model.weight.fill_(float(index))
        save_checkpoint(args.checkpoint, model=model, epoch=index, step=index, extra={"index": index})
        print(f"SAVED {index}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("train", "save-loop"), default="train")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--out", default=None)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.mode == "train":
        if args.out is None:
            parser.error("--out is required with --mode train")
        train(args)
    else:
        save_loop(args)


if __name__ == "__main__":
    main(sys.argv[1:])
