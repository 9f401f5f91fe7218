"""ipywidgets explorers (they render in JupyterLab; under papermill they are built but static)."""
from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt

from vidlab.viz.clips import frame_grid


def dataset_browser(dataset: Any, *, max_frames: int = 8) -> Any:
    """Browse a :class:`~vidlab.data.VideoDataset`: pick a class and an index, see the decoded
    clip (raw frames, no augmentation) with its label, path and metadata."""
    import ipywidgets as widgets
    from IPython.display import display

    from vidlab.data.io import decode_frames

    names = list(dataset.classes) or ["(unlabelled)"]
    by_class: dict[int, list[int]] = {}
    for i, row in enumerate(dataset.rows):
        by_class.setdefault(row.label, []).append(i)
    options = [(f"{names[k] if 0 <= k < len(names) else 'unlabelled'} ({len(v)})", k) for k, v in sorted(by_class.items())]
    cls = widgets.Dropdown(options=options, description="class")
    idx = widgets.IntSlider(min=0, max=max(len(by_class[options[0][1]]) - 1, 0), description="video")
    out = widgets.Output()

    def render(*_: Any) -> None:
        members = by_class[cls.value]
        idx.max = max(len(members) - 1, 0)
        i = members[min(idx.value, idx.max)]
        row = dataset.rows[i]
        times = dataset.sampler(row.duration, row.fps, None)[0]
        frames = decode_frames(dataset.video_path(i), times)
        with out:
            out.clear_output(wait=True)
            print(f"{row.path}  label={row.label} ({row.label_name})  {row.width}x{row.height}  "
                  f"{row.num_frames} frames @ {row.fps:g} fps  {row.duration:.2f} s")
            fig = frame_grid(frames, max_frames=max_frames)
            display(fig)
            plt.close(fig)

    cls.observe(render, names="value")
    idx.observe(render, names="value")
    render()
    return widgets.VBox([widgets.HBox([cls, idx]), out])
