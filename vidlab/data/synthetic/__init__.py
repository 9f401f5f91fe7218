"""An embedded synthetic action dataset: real H.264 ``.mp4`` files plus a manifest.

Each video shows one actor doing one of the motions in :data:`CLASSES`; a single frame says
nothing about the class, only the motion does (see :mod:`~vidlab.data.synthetic.world`).

* :mod:`~vidlab.data.synthetic.config` -- classes, splits, :class:`SyntheticConfig`, presets;
* :mod:`~vidlab.data.synthetic.shapes` -- actor and distractor shapes;
* :mod:`~vidlab.data.synthetic.world` -- the scene and the motion of each class;
* :mod:`~vidlab.data.synthetic.render` -- :func:`render_video`, frames ``(T, H, W, 3)`` uint8;
* :mod:`~vidlab.data.synthetic.generator` -- :func:`generate` / :func:`ensure_dataset`: the
  worker pool, the files, the manifest.

Same seed, same dataset: every video has its own random stream, and the encoder writes the
same bytes on any CPU (:mod:`vidlab.data.encode`), so the files do not depend on the number
of workers or on the machine.
"""
from __future__ import annotations

from vidlab.data.synthetic.config import CLASSES, DOMAINS, PRESETS, SPLITS, SyntheticConfig, resolve_config
from vidlab.data.synthetic.generator import (
    DATASET_JSON,
    GENERATOR_VERSION,
    ensure_dataset,
    generate,
    read_dataset_info,
    relative_video_path,
    video_label,
    video_rng,
)
from vidlab.data.synthetic.render import render_video

__all__ = [
    "CLASSES",
    "DATASET_JSON",
    "DOMAINS",
    "GENERATOR_VERSION",
    "PRESETS",
    "SPLITS",
    "SyntheticConfig",
    "ensure_dataset",
    "generate",
    "read_dataset_info",
    "relative_video_path",
    "render_video",
    "resolve_config",
    "video_label",
    "video_rng",
]
