"""The synthetic dataset's classes, splits and sizes: :class:`SyntheticConfig` and its presets."""
from __future__ import annotations

from dataclasses import dataclass, fields

CLASSES: list[str] = [
    "move_left",
    "move_right",
    "move_up",
    "move_down",
    "rotate_clockwise",
    "rotate_counterclockwise",
    "grow",
    "shrink",
    "oscillate_horizontal",
    "oscillate_vertical",
    "fall_and_bounce",
    "orbit",
]
DOMAINS = ("A", "B")
# split -> (domain, stable code used in each video's seed)
SPLITS: dict[str, tuple[str, int]] = {
    "train": ("A", 0),
    "val": ("A", 1),
    "test": ("A", 2),
    "unlabeled": ("A", 3),
    "shift_train": ("B", 4),
    "shift_val": ("B", 5),
    "shift_test": ("B", 6),
}


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and look of a synthetic dataset. Counts are per class except ``unlabeled`` (total).

    Frames are ``size x size`` RGB; a video has ``num_frames`` frames at ``fps``.
    """

    name: str = "cpu"
    size: int = 64
    num_frames: int = 32
    fps: float = 16.0
    train_per_class: int = 100
    val_per_class: int = 20
    test_per_class: int = 40
    unlabeled: int = 3000
    shift_train_per_class: int = 20
    shift_val_per_class: int = 10
    shift_test_per_class: int = 40
    crf: int = 20
    encoder_preset: str = "veryfast"
    max_distractors: int = 2
    occlusion_prob: float = 0.2
    max_noise_std: float = 5.0
    jitter_px: float = 1.0

    def __post_init__(self) -> None:
        if self.size < 16 or self.size % 2:
            raise ValueError(f"SyntheticConfig.size must be an even number >= 16 (H.264 4:2:0), got {self.size}")
        if self.num_frames < 4:
            raise ValueError(f"SyntheticConfig.num_frames must be >= 4, got {self.num_frames}")
        if not self.fps > 0:
            raise ValueError(f"SyntheticConfig.fps must be > 0, got {self.fps}")
        for f in fields(self):
            if f.name.endswith("_per_class") or f.name in ("unlabeled", "max_distractors"):
                if getattr(self, f.name) < 0:
                    raise ValueError(f"SyntheticConfig.{f.name} must be >= 0, got {getattr(self, f.name)}")
        if not 0.0 <= self.occlusion_prob <= 1.0:
            raise ValueError(f"SyntheticConfig.occlusion_prob must be in [0, 1], got {self.occlusion_prob}")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"SyntheticConfig.crf must be in [0, 51], got {self.crf}")

    def split_sizes(self) -> dict[str, int]:
        """Number of videos in each split."""
        n = len(CLASSES)
        return {
            "train": self.train_per_class * n,
            "val": self.val_per_class * n,
            "test": self.test_per_class * n,
            "unlabeled": self.unlabeled,
            "shift_train": self.shift_train_per_class * n,
            "shift_val": self.shift_val_per_class * n,
            "shift_test": self.shift_test_per_class * n,
        }

    @property
    def duration(self) -> float:
        """Seconds per video."""
        return self.num_frames / self.fps


PRESETS: dict[str, SyntheticConfig] = {
    # CI: 192 videos of 2 s (16 frames at 8 fps, 64x64).
    "smoke": SyntheticConfig(
        name="smoke", size=64, num_frames=16, fps=8.0,
        train_per_class=3, val_per_class=2, test_per_class=2, unlabeled=48,
        shift_train_per_class=2, shift_val_per_class=1, shift_test_per_class=2,
    ),
    # Laptop default: 5,760 videos of 2 s (32 frames at 16 fps, 64x64); `make_synthetic.py`
    # prints how long it took.
    "cpu": SyntheticConfig(name="cpu"),
    # GPU recipes: 112x112, 4x the labelled data and 20,000 unlabelled videos (use many workers).
    "full": SyntheticConfig(
        name="full", size=112, num_frames=32, fps=16.0,
        train_per_class=400, val_per_class=50, test_per_class=100, unlabeled=20000,
        shift_train_per_class=50, shift_val_per_class=25, shift_test_per_class=100,
        crf=18,
    ),
}


def resolve_config(preset: str | SyntheticConfig) -> SyntheticConfig:
    """A preset name (``smoke``/``cpu``/``full``) or a config -> the config."""
    if isinstance(preset, SyntheticConfig):
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; known: {', '.join(PRESETS)}")
    return PRESETS[preset]
