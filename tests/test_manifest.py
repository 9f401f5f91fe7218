import pytest

from vidlab.data.manifest import ManifestError, ManifestRow, class_names, read_manifest, splits, write_manifest


def _row(i, label=0, split="train"):
    return ManifestRow(f"v/{i}.mp4", label, split, 32, 16.0, 64, 64, 2.0, label_name=f"c{label}", domain="A", codec="h264")


def test_round_trip(tmp_path):
    rows = [_row(0), _row(1, 1, "val"), _row(2, -1, "unlabeled")]
    path = write_manifest(rows, tmp_path)
    assert path.name == "manifest.csv"
    assert read_manifest(tmp_path) == rows
    assert splits(rows) == {"train": 1, "val": 1, "unlabeled": 1}
    assert class_names(rows) == ["c0", "c1"]


def test_errors_name_file_line_column(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,label,split\nx.mp4,0,train\n")
    with pytest.raises(ManifestError, match="missing column"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text(
        "path,label,split,num_frames,fps,width,height,duration\nx.mp4,zero,train,1,1,1,1,1\n"
    )
    with pytest.raises(ManifestError, match=r"manifest.csv:2: column 'label'"):
        read_manifest(tmp_path)
    with pytest.raises(ManifestError, match="no manifest"):
        read_manifest(tmp_path / "elsewhere")
