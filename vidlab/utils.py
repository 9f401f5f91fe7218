"""Small shared helpers: seeding, device choice, atomic weights-only checkpoints."""
from __future__ import annotations

import os
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch


def project_root() -> Path:
    """The checkout that holds ``vidlab/`` (the package is installed editable)."""
    return Path(__file__).resolve().parents[1]


def set_seed(seed: int) -> torch.Generator:
    """Seed ``random``, numpy and torch; returns a seeded generator for DataLoaders.

    Pass ``worker_init_fn=vl.seed_worker`` and ``generator=`` the returned generator to a
    DataLoader so its workers are seeded too.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive numpy/random seeds from torch's worker seed."""
    worker_seed = torch.initial_seed() % 2**32
    np.random.seed(worker_seed)
    random.seed(worker_seed)


def seeded_loader(
    dataset: Any,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    num_workers: int = 0,
    drop_last: bool = False,
    loader_class: type | None = None,
    **kwargs: Any,
) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` (or ``loader_class``) whose order and worker seeds are a function of ``seed``:
    its own seeded generator and :func:`seed_worker`. ``kwargs`` go to the loader (``collate_fn``,
    ``sampler``, ``persistent_workers``, ...)."""
    g = torch.Generator()
    g.manual_seed(seed)
    cls = loader_class or torch.utils.data.DataLoader
    return cls(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, generator=g,
               worker_init_fn=seed_worker, drop_last=drop_last, **kwargs)


def unwrap_model(model: torch.nn.Module) -> torch.nn.Module:
    """The module that owns the weights: strips DDP/DataParallel ``.module`` and ``torch.compile``'s ``._orig_mod``."""
    while True:
        if hasattr(model, "_orig_mod") and isinstance(model._orig_mod, torch.nn.Module):
            model = model._orig_mod
        elif isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        else:
            return model


def get_device(device: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; ``"cpu"``/``"cuda"``/``"cuda:N"`` as given."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"DEVICE={device!r} was asked for, but no CUDA GPU is visible; use 'auto' or 'cpu'")
    return dev


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path beside ``path`` (same suffix, so tools
    that look at the extension still work); when the block succeeds the file is fsynced and
    moved into place with ``os.replace``, when it fails the temporary file is deleted. A
    process killed mid-write leaves the previous ``path`` intact. ``fsync=False`` skips the
    flush to disk (for many small files whose folder is itself published atomically).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
        if fsync:
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`atomic_path`: the previous file survives a crash mid-save."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``: tensors and primitives only, pickles refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError for disallowed globals
        raise ValueError(
            f"refused to load {path}: it is not a weights-only checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''})"
        ) from exc
