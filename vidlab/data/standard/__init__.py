"""Standard video datasets, one small module each (as torchvision does), on a shared base.

* :mod:`~vidlab.data.standard.fetch` -- :func:`download` (resumable, checksummed),
  :func:`extract` (zip/tar/rar, refusing members that leave the destination),
  :func:`fetch_and_extract`;
* :mod:`~vidlab.data.standard.ucf101`, :mod:`~vidlab.data.standard.hmdb51`,
  :mod:`~vidlab.data.standard.kinetics`, :mod:`~vidlab.data.standard.ssv2` --
  ``build_<name>_manifest``: parse the official split/annotation files, validate every video
  (in parallel) and write ``manifest.csv`` + ``rejected.csv`` like
  :func:`vidlab.data.prepare.prepare_folder`;
* :mod:`~vidlab.data.standard.common` -- what the builders share;
  :mod:`~vidlab.data.standard.cli` -- what the command lines in ``data_scripts/`` share.

Nothing here scrapes anything: Kinetics and SSv2 videos must already be on disk (missing
ones are counted and listed); UCF101/HMDB51 come from their official archives.
"""
from __future__ import annotations

from vidlab.data.standard.cli import official_dataset_cli
from vidlab.data.standard.fetch import (
    ArchiveError,
    ChecksumError,
    DownloadError,
    download,
    extract,
    extract_nested,
    fetch_and_extract,
    file_digest,
)
from vidlab.data.standard.hmdb51 import (
    HMDB51_SPLITS_URL,
    HMDB51_URL,
    build_hmdb51_manifest,
    extract_hmdb51_class_archives,
    parse_hmdb51_splits,
)
from vidlab.data.standard.kinetics import build_kinetics_manifest, parse_kinetics_csv
from vidlab.data.standard.ssv2 import build_ssv2_manifest
from vidlab.data.standard.ucf101 import UCF101_SPLITS_URL, UCF101_URL, build_ucf101_manifest, parse_ucf101_splits

__all__ = [
    "ArchiveError",
    "ChecksumError",
    "DownloadError",
    "HMDB51_SPLITS_URL",
    "HMDB51_URL",
    "UCF101_SPLITS_URL",
    "UCF101_URL",
    "build_hmdb51_manifest",
    "build_kinetics_manifest",
    "build_ssv2_manifest",
    "build_ucf101_manifest",
    "download",
    "extract",
    "extract_hmdb51_class_archives",
    "extract_nested",
    "fetch_and_extract",
    "file_digest",
    "official_dataset_cli",
    "parse_hmdb51_splits",
    "parse_kinetics_csv",
    "parse_ucf101_splits",
]
