"""Standard video datasets: resumable checked downloads, safe extraction, manifest builders.

* :func:`download` -- urllib, resumes ``dest.part`` with an HTTP Range request, verifies
  SHA-256/MD5, deletes a file whose checksum does not match.
* :func:`extract` -- zip / tar(.gz/.bz2/.xz) refusing absolute paths, ``..`` members and
  links that leave the destination; .rar through ``unrar``/``7z``/``7zz``/``bsdtar``.
* ``build_<name>_manifest`` for UCF101, HMDB51, Kinetics-400/600/700 and
  Something-Something v2: parse the official split/annotation files, validate every
  video (in parallel), and write ``manifest.csv`` + ``rejected.csv`` like
  :func:`vidlab.data.prepare.prepare_folder`.

Nothing here scrapes anything: Kinetics and SSv2 videos must already be on disk (missing
ones are counted and listed); UCF101/HMDB51 come from their official archives.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
import shutil
import stat
import subprocess
import tarfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from http.client import HTTPException
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from vidlab.data.prepare import VIDEO_EXTENSIONS, PrepareReport, VideoEntry, manifest_from_entries

# Official archives. No published checksums are bundled: pass sha256=/md5= (CLI --sha256/--md5)
# once you know the digest of your copy, so a re-download is verified against it.
UCF101_URL = "https://www.crcv.ucf.edu/data/UCF101/UCF101.rar"
UCF101_SPLITS_URL = "https://www.crcv.ucf.edu/data/UCF101/UCF101TrainTestSplits-RecognitionTask.zip"
HMDB51_URL = "https://serre-lab.clps.brown.edu/wp-content/uploads/2013/10/hmdb51_org.rar"
HMDB51_SPLITS_URL = "https://serre-lab.clps.brown.edu/wp-content/uploads/2013/10/test_train_splits.rar"

USER_AGENT = "vidlab-downloader/0.1"


class DownloadError(RuntimeError):
    """A download that failed; the message names the URL and what to do next."""


class ChecksumError(DownloadError):
    """The downloaded bytes do not have the expected digest (the bad file was deleted)."""

    def __init__(self, url: str, algorithm: str, expected: str, actual: str):
        self.url, self.algorithm, self.expected, self.actual = url, algorithm, expected, actual
        super().__init__(
            f"checksum mismatch for {url}: expected {algorithm} {expected}, got {actual}; "
            "the downloaded file was deleted (check the URL / expected digest and run again)"
        )


class ArchiveError(RuntimeError):
    """An archive that cannot be extracted safely (names the archive and the member)."""


# --------------------------------------------------------------------------- download


def file_digest(path: str | os.PathLike, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _expected_digests(sha256: str | None, md5: str | None) -> dict[str, str]:
    return {a: d.strip().lower() for a, d in (("sha256", sha256), ("md5", md5)) if d}


def _mismatch(path: Path, expected: dict[str, str]) -> tuple[str, str, str] | None:
    for algorithm, digest in expected.items():
        actual = file_digest(path, algorithm)
        if actual != digest:
            return algorithm, digest, actual
    return None


class _Interrupted(Exception):
    """The connection ended before the announced length arrived."""


def _content_range(header: str | None) -> tuple[int | None, int | None]:
    """Parse ``bytes START-END/TOTAL`` or ``bytes */TOTAL`` -> (start, total)."""
    m = re.match(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", header or "")
    if not m:
        return None, None
    start = int(m.group(1)) if m.group(1) is not None else None
    total = int(m.group(2)) if m.group(2) != "*" else None
    return start, total


def _fetch(url: str, part: Path, *, resume: bool, chunk: int, progress: bool, timeout: float) -> None:
    """One HTTP attempt: append to (or restart) ``part`` until the body ends."""
    start = part.stat().st_size if resume and part.exists() else 0
    headers = {"User-Agent": USER_AGENT}
    if start:
        headers["Range"] = f"bytes={start}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 - scheme checked by caller
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and start:
            _, total = _content_range(exc.headers.get("Content-Range"))
            exc.close()
            if total == start:  # the partial file is already complete
                return
            part.unlink()
            return _fetch(url, part, resume=False, chunk=chunk, progress=progress, timeout=timeout)
        raise
    with response:
        mode, total = "wb", None
        if start and response.status == 206:
            got_start, total = _content_range(response.headers.get("Content-Range"))
            if got_start != start:  # a range we did not ask for: start over without Range
                response.close()
                part.unlink()
                return _fetch(url, part, resume=False, chunk=chunk, progress=progress, timeout=timeout)
            mode = "ab"
        elif start:
            # The server ignored Range and sends the whole file: start over.
            start = 0
        length = response.headers.get("Content-Length")
        if total is None and length is not None and length.isdigit():
            total = start + int(length) if mode == "ab" else int(length)
        with open(part, mode) as fh, tqdm(
            total=total, initial=start if mode == "ab" else 0, unit="B", unit_scale=True,
            desc=Path(urllib.parse.urlsplit(url).path).name or "download", disable=not progress,
        ) as bar:
            while True:
                block = response.read(chunk)
                if not block:
                    break
                fh.write(block)
                bar.update(len(block))
    received = part.stat().st_size
    if total is not None and received < total:
        raise _Interrupted(f"connection closed after {received} of {total} bytes")


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    resume: bool = True,
    chunk: int = 1 << 20,
    progress: bool = True,
    timeout: float = 30,
    retries: int = 3,
) -> Path:
    """Download ``url`` to ``dest`` (a file path, or an existing folder to keep the URL's name).

    Bytes go to ``dest.part`` first; an interrupted download is resumed from there with an
    HTTP Range request (on this call's retries or on a later call), and a server that
    ignores Range restarts it. The file is moved to ``dest`` only once it is complete and
    its SHA-256/MD5 (when given) match; on a mismatch it is deleted and
    :class:`ChecksumError` names the URL and both digests. An existing ``dest`` with a
    matching (or no) checksum is returned without downloading. Only http/https URLs.
    """
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"only http:// and https:// URLs can be downloaded, got {url!r}")
    if chunk <= 0:
        raise ValueError(f"chunk must be > 0, got {chunk}")
    dest = Path(dest)
    if dest.is_dir():
        name = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)).name
        if not name:
            raise ValueError(f"cannot take a file name from {url!r}; pass a file path as dest")
        dest = dest / name
    dest.parent.mkdir(parents=True, exist_ok=True)
    expected = _expected_digests(sha256, md5)
    if dest.exists():
        if not expected or _mismatch(dest, expected) is None:
            return dest
        dest.unlink()  # an old, different file: fetch it again
    part = dest.with_name(dest.name + ".part")
    if not resume and part.exists():
        part.unlink()
    attempt = 0
    while True:
        try:
            _fetch(url, part, resume=resume, chunk=chunk, progress=progress, timeout=timeout)
            break
        except urllib.error.HTTPError as exc:
            raise DownloadError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}") from exc
        except (_Interrupted, urllib.error.URLError, HTTPException, OSError) as exc:
            if attempt >= retries:
                kept = f"; the partial file {part} is kept, run again to resume" if part.exists() else ""
                raise DownloadError(
                    f"downloading {url} failed after {attempt + 1} attempt(s): {exc}{kept}"
                ) from exc
            attempt += 1
            time.sleep(min(0.5 * 2 ** (attempt - 1), 10.0))
    bad = _mismatch(part, expected)
    if bad is not None:
        part.unlink()
        raise ChecksumError(url, *bad)
    os.replace(part, dest)
    return dest


# --------------------------------------------------------------------------- extract

_RAR_MAGIC = (b"Rar!\x1a\x07\x00", b"Rar!\x1a\x07\x01\x00")
_RAR_TOOLS = ("unrar", "7zz", "7z", "bsdtar")


def _check_member_name(name: str, archive: Path) -> PurePosixPath:
    """Refuse absolute paths, drive letters and ``..`` components."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise ArchiveError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    path = PurePosixPath(norm)
    if ".." in path.parts:
        raise ArchiveError(f"{archive}: member {name!r} points outside the destination ('..'); refusing to extract")
    return path


def _check_link_target(member: PurePosixPath, target: str, archive: Path, *, relative_to_member: bool) -> None:
    norm = target.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise ArchiveError(f"{archive}: link {member} -> {target!r} is absolute; refusing to extract")
    base = list(member.parent.parts) if relative_to_member else []
    for part in PurePosixPath(norm).parts:
        if part == "..":
            if not base:
                raise ArchiveError(f"{archive}: link {member} -> {target!r} leaves the destination; refusing to extract")
            base.pop()
        elif part != ".":
            base.append(part)


def _archive_kind(archive: Path) -> str:
    with open(archive, "rb") as fh:
        head = fh.read(8)
    if any(head.startswith(m) for m in _RAR_MAGIC) or archive.suffix.lower() == ".rar":
        return "rar"
    if zipfile.is_zipfile(archive):
        return "zip"
    if tarfile.is_tarfile(archive):
        return "tar"
    raise ArchiveError(f"{archive}: not a zip, tar(.gz/.bz2/.xz) or rar archive")


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            member = _check_member_name(info.filename, archive)
            if stat.S_ISLNK(info.external_attr >> 16):
                target = zf.read(info).decode("utf-8", "replace")
                _check_link_target(member, target, archive, relative_to_member=True)
        zf.extractall(dest)


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            name = _check_member_name(member.name, archive)
            if member.issym():
                _check_link_target(name, member.linkname, archive, relative_to_member=True)
            elif member.islnk():
                _check_link_target(name, member.linkname, archive, relative_to_member=False)
            elif not (member.isfile() or member.isdir()):
                raise ArchiveError(f"{archive}: member {member.name!r} is a device or fifo; refusing to extract")
        tf.extractall(dest, filter="data")


def _rar_listing(tool: str, exe: str, archive: Path) -> list[str]:
    if tool == "unrar":
        cmd = [exe, "lb", "--", str(archive)]
    elif tool in ("7z", "7zz"):
        cmd = [exe, "l", "-slt", str(archive)]
    else:
        cmd = [exe, "-tf", str(archive)]
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    if result.returncode != 0:
        raise ArchiveError(f"{archive}: {tool} could not list the archive: {result.stderr.strip() or result.stdout.strip()}")
    lines = result.stdout.splitlines()
    if tool in ("7z", "7zz"):
        body = lines[next((i for i, l in enumerate(lines) if l.startswith("----------")), -1) + 1:]
        return [l[len("Path = "):] for l in body if l.startswith("Path = ")]
    return [l for l in lines if l.strip()]


def _extract_rar(archive: Path, dest: Path) -> None:
    found = [(tool, shutil.which(tool)) for tool in _RAR_TOOLS]
    found = [(tool, exe) for tool, exe in found if exe]
    if not found:
        raise ArchiveError(
            f"cannot extract {archive}: .rar archives need an external tool and none of "
            f"{', '.join(_RAR_TOOLS)} is on PATH. Install one, e.g. `apt-get install unrar` "
            "(Debian non-free), `apt-get install 7zip` (provides 7zz), `apt-get install "
            "libarchive-tools` (bsdtar), `brew install sevenzip`, or `conda install -c "
            "conda-forge unrar`; or extract it yourself and pass --root"
        )
    tool, exe = found[0]
    for name in _rar_listing(tool, exe, archive):
        _check_member_name(name, archive)
    if tool == "unrar":
        cmd = [exe, "x", "-o+", "-y", "-idq", "--", str(archive), str(dest) + os.sep]
    elif tool in ("7z", "7zz"):
        cmd = [exe, "x", "-y", f"-o{dest}", str(archive)]
    else:
        cmd = [exe, "-xf", str(archive), "-C", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True, errors="replace", check=False)
    if result.returncode != 0:
        raise ArchiveError(f"{archive}: {tool} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")
    root = dest.resolve()
    for path in dest.rglob("*"):
        if path.is_symlink():
            target = path.resolve()
            if target != root and root not in target.parents:
                path.unlink()
                raise ArchiveError(f"{archive}: symbolic link {path} points outside {dest}; removed it")


def extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract ``archive`` into the folder ``dest`` (created) and return ``dest``.

    zip and tar(.gz/.bz2/.xz) are checked member by member first: absolute paths, ``..``
    components and links pointing outside ``dest`` raise :class:`ArchiveError` before
    anything is written. .rar needs ``unrar``, ``7zz``/``7z`` or ``bsdtar`` on PATH (the
    error says which to install); its listing is checked the same way.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise FileNotFoundError(f"archive {archive} does not exist")
    dest.mkdir(parents=True, exist_ok=True)
    kind = _archive_kind(archive)
    {"zip": _extract_zip, "tar": _extract_tar, "rar": _extract_rar}[kind](archive, dest)
    return dest


def _is_archive_name(name: str) -> bool:
    lower = name.lower()
    return lower.endswith((".zip", ".rar", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz"))


def extract_nested(folder: str | os.PathLike) -> list[Path]:
    """Extract every archive lying directly in ``folder`` into ``folder`` (HMDB51 ships one
    .rar per class inside its main archive). A ``.<name>.extracted`` marker skips work
    already done. Returns the archives extracted now."""
    folder = Path(folder)
    done = []
    for archive in sorted(p for p in folder.iterdir() if p.is_file() and _is_archive_name(p.name)):
        marker = folder / f".{archive.name}.extracted"
        if marker.exists():
            continue
        extract(archive, folder)
        marker.touch()
        done.append(archive)
    return done


def fetch_and_extract(
    url: str,
    data_dir: str | os.PathLike,
    *,
    archive: str | os.PathLike | None = None,
    sha256: str | None = None,
    md5: str | None = None,
    resume: bool = True,
    progress: bool = True,
) -> Path:
    """Download ``url`` into ``data_dir/downloads`` (or use a local ``archive``) and extract it
    into ``data_dir``. A marker file makes a second call skip the extraction."""
    data_dir = Path(data_dir)
    if archive is None:
        (data_dir / "downloads").mkdir(parents=True, exist_ok=True)
        archive = download(url, data_dir / "downloads", sha256=sha256, md5=md5, resume=resume, progress=progress)
    else:
        archive = Path(archive)
        if not archive.is_file():
            raise FileNotFoundError(f"--archive {archive} does not exist")
        bad = _mismatch(archive, _expected_digests(sha256, md5))
        if bad is not None:
            raise ChecksumError(str(archive), *bad)
    marker = data_dir / f".{Path(archive).name}.extracted"
    if not marker.exists():
        if progress:
            print(f"extracting {archive} -> {data_dir}")
        extract(archive, data_dir)
        marker.touch()
    return data_dir


# --------------------------------------------------------------------------- helpers


def _read_lines(path: Path) -> list[str]:
    text = path.read_bytes().decode("utf-8", "replace")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _find_dir(root: Path, name: str, *, max_depth: int = 3) -> Path | None:
    """``root/name`` or the shallowest folder called ``name`` under ``root``."""
    if root.name == name and root.is_dir():
        return root
    frontier = [root]
    for _ in range(max_depth):
        next_frontier = []
        for folder in frontier:
            try:
                children = sorted(p for p in folder.iterdir() if p.is_dir())
            except OSError:
                continue
            for child in children:
                if child.name == name:
                    return child
            next_frontier.extend(children)
        frontier = next_frontier
    return None


def _index_videos(root: Path) -> dict[tuple[str, str], Path]:
    """Map (parent folder name, file name), both lower-cased, to every video under ``root``."""
    index: dict[tuple[str, str], Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
            index.setdefault((path.parent.name.lower(), path.name.lower()), path)
    return index


def _carve_val(groups: Sequence[str], val_fraction: float, seed: int) -> set[str]:
    """Pick whole groups for val (at least one when there are two or more groups)."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    unique = sorted(set(groups))
    if val_fraction == 0 or len(unique) < 2:
        return set()
    k = min(max(1, round(len(unique) * val_fraction)), len(unique) - 1)
    return set(random.Random(seed).sample(unique, k))


def _check_split(split: int) -> None:
    if split not in (1, 2, 3):
        raise ValueError(f"split must be 1, 2 or 3 (the official splits), got {split!r}")


def _build(entries: list[VideoEntry], out: Path, *, workers: int, progress: bool, missing: Sequence[str],
           rejected_extra: Sequence[tuple[str, str]] = (), class_order: Sequence[str], started: float) -> PrepareReport:
    report = manifest_from_entries(entries, out, workers=workers, progress=False, missing=missing,
                                   class_order=class_order, started=started)
    if rejected_extra:
        from vidlab.data.prepare import write_rejected

        report.rejected = sorted(report.rejected + list(rejected_extra))
        report.rejected_csv = write_rejected(report.rejected, out)
    if progress:
        print(report.summary())
    return report


# --------------------------------------------------------------------------- UCF101

_UCF_GROUP = re.compile(r"_g(\d+)_c\d+", re.IGNORECASE)


def parse_ucf101_splits(split_dir: str | os.PathLike, split: int = 1) -> tuple[list[str], list[str], list[str]]:
    """Read ``classInd.txt``, ``trainlist0{split}.txt`` and ``testlist0{split}.txt``.

    Returns ``(class_names, train_paths, test_paths)``; class ``i`` (0-based) is line
    ``i + 1`` of classInd, paths are as listed (``Class/v_Class_gXX_cYY.avi``).
    """
    _check_split(split)
    split_dir = Path(split_dir)
    needed = [split_dir / "classInd.txt", split_dir / f"trainlist0{split}.txt", split_dir / f"testlist0{split}.txt"]
    for path in needed:
        if not path.is_file():
            raise FileNotFoundError(f"UCF101 split file {path} is missing (from {UCF101_SPLITS_URL})")
    by_index: dict[int, str] = {}
    for line in _read_lines(needed[0]):
        index, _, name = line.partition(" ")
        if not index.isdigit() or not name.strip():
            raise ValueError(f"{needed[0]}: cannot parse line {line!r} (expected '<index> <ClassName>')")
        by_index[int(index)] = name.strip()
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise ValueError(f"{needed[0]}: class indices must run 1..N, got {sorted(by_index)}")
    classes = [by_index[i] for i in range(1, len(by_index) + 1)]
    train = [line.split()[0].replace("\\", "/") for line in _read_lines(needed[1])]
    test = [line.split()[0].replace("\\", "/") for line in _read_lines(needed[2])]
    return classes, train, test


def build_ucf101_manifest(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    split: int = 1,
    workers: int = 2,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> PrepareReport:
    """Manifest for official UCF101 split ``split`` (1, 2 or 3).

    ``root`` holds ``ucfTrainTestlist/`` and ``UCF-101/<Class>/v_*.avi`` (found up to 3
    folders down). label = classInd index - 1. ``val`` is carved from the official train
    list by whole ``gXX`` groups (the same group is never in both train and val); the
    official test list is ``test``. ``out`` defaults to ``root``.
    """
    started = time.perf_counter()
    root = Path(root)
    out = Path(out) if out is not None else root
    if not root.is_dir():
        raise FileNotFoundError(f"UCF101 root {root} does not exist")
    split_dir = _find_dir(root, "ucfTrainTestlist")
    if split_dir is None:
        raise FileNotFoundError(f"no ucfTrainTestlist/ folder under {root} (extract {UCF101_SPLITS_URL} there)")
    classes, train, test = parse_ucf101_splits(split_dir, split)
    video_dir = _find_dir(root, "UCF-101") or root
    index = _index_videos(video_dir)
    label_of = {name.lower(): i for i, name in enumerate(classes)}
    found, missing, bad = [], [], []
    for official, listed in (("train", train), ("test", test)):
        for rel in listed:
            folder, _, filename = rel.rpartition("/")
            label = label_of.get(folder.lower())
            if label is None:
                bad.append((rel, f"class folder {folder!r} is not in classInd.txt"))
                continue
            path = index.get((folder.lower(), filename.lower()))
            if path is None:
                missing.append(rel)
                continue
            group = m.group(1).lstrip("0") if (m := _UCF_GROUP.search(filename)) else filename
            found.append((path, label, official, group))
    # Val takes whole gXX groups (same actors/background) among the train videos present.
    val_groups = _carve_val([g for _, _, official, g in found if official == "train"], val_fraction, seed)
    entries = [
        VideoEntry(str(path), label, "val" if official == "train" and group in val_groups else official, classes[label])
        for path, label, official, group in found
    ]
    return _build(entries, out, workers=workers, progress=progress, missing=missing, rejected_extra=bad,
                  class_order=classes, started=started)


# --------------------------------------------------------------------------- HMDB51

_HMDB_SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<split>[123])\.txt$")


def parse_hmdb51_splits(split_dir: str | os.PathLike, split: int = 1) -> tuple[list[str], list[tuple[str, str, int]]]:
    """Read ``<class>_test_split{split}.txt`` files (``video.avi 1|2|0``).

    Returns ``(class_names sorted, [(class, video, flag)])`` with flag 1 = train,
    2 = test, 0 = unused.
    """
    _check_split(split)
    split_dir = Path(split_dir)
    files = sorted(p for p in split_dir.glob(f"*_test_split{split}.txt"))
    if not files:
        raise FileNotFoundError(f"no *_test_split{split}.txt files in {split_dir} (from {HMDB51_SPLITS_URL})")
    classes, rows = [], []
    for path in files:
        name = _HMDB_SPLIT_FILE.match(path.name).group("cls")
        classes.append(name)
        for line in _read_lines(path):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}: cannot parse line {line!r} (expected '<video>.avi 0|1|2')")
            rows.append((name, parts[0], int(parts[1])))
    return sorted(classes), rows


def _hmdb_source(video: str, class_name: str) -> str:
    """The source film of an HMDB51 clip (text before ``_<class>_``), used to group val."""
    stem = Path(video).stem
    head, sep, _ = stem.partition(f"_{class_name}_")
    return head if sep else re.sub(r"_\d+$", "", stem)


def build_hmdb51_manifest(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    split: int = 1,
    workers: int = 2,
    val_fraction: float = 0.1,
    seed: int = 0,
    progress: bool = True,
) -> PrepareReport:
    """Manifest for official HMDB51 split ``split`` (1, 2 or 3).

    ``root`` holds the split files (``testTrainMulti_7030_splits/`` or any folder with
    ``*_test_split1.txt``) and ``<class>/<video>.avi``. Labels follow the sorted class
    names. ``val`` is carved from train by whole source films (the text before
    ``_<class>_`` in the file name), official test is ``test``, flag-0 videos are left out.
    """
    started = time.perf_counter()
    root = Path(root)
    out = Path(out) if out is not None else root
    if not root.is_dir():
        raise FileNotFoundError(f"HMDB51 root {root} does not exist")
    split_dir = _find_dir(root, "testTrainMulti_7030_splits")
    if split_dir is None:
        hit = next(iter(sorted(root.rglob("*_test_split1.txt"))), None)
        if hit is None:
            raise FileNotFoundError(f"no HMDB51 split files (*_test_split1.txt) under {root}")
        split_dir = hit.parent
    classes, rows = parse_hmdb51_splits(split_dir, split)
    index = _index_videos(root)
    label_of = {name: i for i, name in enumerate(classes)}
    found, missing = [], []
    for class_name, video, flag in rows:
        if flag == 0:
            continue
        path = index.get((class_name.lower(), video.lower()))
        if path is None:
            missing.append(f"{class_name}/{video}")
            continue
        found.append((path, class_name, flag, _hmdb_source(video, class_name)))
    # Val takes whole source films among the train videos present.
    val_groups = _carve_val([source for _, _, flag, source in found if flag == 1], val_fraction, seed)
    entries = [
        VideoEntry(str(path), label_of[class_name],
                   "test" if flag == 2 else "val" if source in val_groups else "train", class_name)
        for path, class_name, flag, source in found
    ]
    return _build(entries, out, workers=workers, progress=progress, missing=missing,
                  class_order=classes, started=started)


# --------------------------------------------------------------------------- Kinetics

_KINETICS_SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validate": "val",
                    "validation": "val", "test": "test", "testing": "test"}


def parse_kinetics_csv(path: str | os.PathLike) -> list[dict]:
    """Rows of a Kinetics annotation CSV (``label,youtube_id,time_start,time_end,split[,is_cc]``).

    Returns dicts with ``label`` (``""`` when the file has no labels, e.g. a test list),
    ``youtube_id``, ``time_start``/``time_end`` (int seconds) and ``split`` (train/val/test).
    """
    path = Path(path)
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        needed = {"youtube_id", "time_start", "time_end"}
        missing = needed - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                             "expected label,youtube_id,time_start,time_end,split")
        for lineno, raw in enumerate(reader, start=2):
            split_text = (raw.get("split") or "").strip().lower() or path.stem.lower()
            split = _KINETICS_SPLITS.get(split_text)
            if split is None:
                raise ValueError(f"{path}:{lineno}: unknown split {split_text!r}")
            try:
                start, end = int(float(raw["time_start"])), int(float(raw["time_end"]))
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{lineno}: time_start/time_end must be numbers, got "
                                 f"{raw.get('time_start')!r}/{raw.get('time_end')!r}") from None
            rows.append({"label": (raw.get("label") or "").strip(), "youtube_id": raw["youtube_id"].strip(),
                         "time_start": start, "time_end": end, "split": split})
    return rows


def build_kinetics_manifest(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    annotations: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    classes: Sequence[str] | None = None,
    splits: Sequence[str] | None = None,
    workers: int = 2,
    progress: bool = True,
) -> PrepareReport:
    """Manifest for Kinetics-400/600/700 from annotation CSV(s) and videos you already have.

    ``root`` is searched recursively for ``{youtube_id}_{time_start:06d}_{time_end:06d}.<ext>``
    or ``{youtube_id}.<ext>``; absent videos are counted in ``report.missing`` (never
    fetched). ``annotations`` defaults to every ``*.csv`` directly in ``root``. Labels are
    the sorted label names of the annotations unless ``classes`` fixes the order; rows
    without a label (test lists) get label -1. ``splits`` keeps only some of train/val/test.
    """
    started = time.perf_counter()
    root = Path(root)
    out = Path(out) if out is not None else root
    if not root.is_dir():
        raise FileNotFoundError(f"Kinetics video folder {root} does not exist")
    if annotations is None:
        files = sorted(p for p in root.glob("*.csv") if p.name not in ("manifest.csv", "rejected.csv"))
    elif isinstance(annotations, (str, os.PathLike)):
        files = [Path(annotations)]
    else:
        files = [Path(a) for a in annotations]
    if not files:
        raise FileNotFoundError(f"no Kinetics annotation CSV given and none in {root}")
    rows = [row for f in files for row in parse_kinetics_csv(f)]
    if splits is not None:
        keep = {_KINETICS_SPLITS.get(s.lower(), s.lower()) for s in splits}
        rows = [r for r in rows if r["split"] in keep]
    names = list(classes) if classes is not None else sorted({r["label"] for r in rows if r["label"]})
    label_of = {name: i for i, name in enumerate(names)}
    by_stem: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
            by_stem.setdefault(path.stem, path)
    entries, missing, bad = [], [], []
    for r in rows:
        clip = f"{r['youtube_id']}_{r['time_start']:06d}_{r['time_end']:06d}"
        path = by_stem.get(clip) or by_stem.get(r["youtube_id"])
        if path is None:
            missing.append(clip)
            continue
        if r["label"] and r["label"] not in label_of:
            bad.append((str(path), f"label {r['label']!r} is not in the given class list"))
            continue
        label = label_of[r["label"]] if r["label"] else -1
        entries.append(VideoEntry(str(path), label, r["split"], r["label"]))
    return _build(entries, out, workers=workers, progress=progress, missing=missing, rejected_extra=bad,
                  class_order=names, started=started)


# --------------------------------------------------------------------------- Something-Something v2

_SSV2_FILES = {"train": "something-something-v2-train.json", "val": "something-something-v2-validation.json",
               "test": "something-something-v2-test.json"}


def _template_key(template: str) -> str:
    return " ".join(template.replace("[", "").replace("]", "").split()).lower()


def build_ssv2_manifest(
    root: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    annotations: str | os.PathLike | None = None,
    workers: int = 2,
    progress: bool = True,
) -> PrepareReport:
    """Manifest for Something-Something v2 from its JSON files and a folder of ``{id}.webm``.

    ``annotations`` (default ``root``) holds ``labels.json`` (template -> id) and
    ``something-something-v2-{train,validation}.json`` (``id``, ``template`` with
    ``[something]`` brackets); an optional ``-test.json`` adds unlabelled (-1) test rows.
    Official train -> ``train``, validation -> ``val``. Absent videos go to ``report.missing``.
    """
    started = time.perf_counter()
    root = Path(root)
    out = Path(out) if out is not None else root
    ann = Path(annotations) if annotations is not None else root
    if not root.is_dir():
        raise FileNotFoundError(f"SSv2 video folder {root} does not exist")
    labels_path = ann / "labels.json"
    if not labels_path.is_file():
        raise FileNotFoundError(f"SSv2 labels file {labels_path} is missing")
    labels = json.loads(labels_path.read_text(encoding="utf-8"))
    by_id = {int(v): k for k, v in labels.items()}
    if sorted(by_id) != list(range(len(by_id))):
        raise ValueError(f"{labels_path}: label ids must run 0..N-1")
    names = [by_id[i] for i in range(len(by_id))]
    label_of = {_template_key(t): i for i, t in enumerate(names)}
    by_stem: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file():
            by_stem.setdefault(path.stem, path)
    entries, missing, bad = [], [], []
    for split_name, filename in _SSV2_FILES.items():
        path = ann / filename
        if not path.is_file():
            if split_name != "test":
                raise FileNotFoundError(f"SSv2 annotation file {path} is missing")
            continue
        for item in json.loads(path.read_text(encoding="utf-8")):
            video_id = str(item["id"])
            video = by_stem.get(video_id)
            if video is None:
                missing.append(f"{video_id}.webm")
                continue
            if split_name == "test":
                entries.append(VideoEntry(str(video), -1, "test", ""))
                continue
            label = label_of.get(_template_key(item.get("template", "")))
            if label is None:
                bad.append((str(video), f"template {item.get('template')!r} is not in labels.json"))
                continue
            entries.append(VideoEntry(str(video), label, split_name, names[label]))
    return _build(entries, out, workers=workers, progress=progress, missing=missing, rejected_extra=bad,
                  class_order=names, started=started)


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
    "extract_nested",
    "fetch_and_extract",
    "file_digest",
    "parse_hmdb51_splits",
    "parse_kinetics_csv",
    "parse_ucf101_splits",
]


# ----------------------------------------------------------------------------- shared CLI
def official_dataset_cli(
    argv: Sequence[str] | None,
    *,
    description: str,
    url: str,
    splits_url: str,
    build: Callable[..., Any],
    root_help: str,
    after_extract: Callable[[Path], None] | None = None,
) -> int:
    """The command line shared by ``data_scripts/ucf101.py`` and ``hmdb51.py``: download (resumable,
    checksummed) or take local archives, extract, then ``build(root, out, split=..., ...)``.

    Exit code 0 when at least one video was accepted, 1 when none, 2 on a download, extract
    or layout error.
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--data-dir", help="folder to download and extract into")
    where.add_argument("--root", help=root_help)
    parser.add_argument("--out", help="folder for manifest.csv and rejected.csv (default: the data folder)")
    parser.add_argument("--split", type=int, choices=(1, 2, 3), default=1, help="official split (default 1)")
    parser.add_argument("--workers", type=int, default=2, help="parallel probing processes (default 2)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of train groups/films used for val")
    parser.add_argument("--seed", type=int, default=0, help="seed of the val carve-out (default 0)")
    parser.add_argument("--url", default=url, help="videos archive URL (default: the official one)")
    parser.add_argument("--archive", help="local copy of the videos archive (skips the download)")
    parser.add_argument("--sha256", help="expected SHA-256 of the videos archive")
    parser.add_argument("--md5", help="expected MD5 of the videos archive")
    parser.add_argument("--splits-url", default=splits_url, help="split lists archive URL")
    parser.add_argument("--splits-archive", help="local copy of the split lists archive")
    parser.add_argument("--splits-sha256", help="expected SHA-256 of the split lists archive")
    parser.add_argument("--splits-md5", help="expected MD5 of the split lists archive")
    parser.add_argument("--no-resume", action="store_true", help="restart downloads instead of resuming")
    parser.add_argument("--quiet", action="store_true", help="no progress bars and no summary")
    args = parser.parse_args(argv)
    progress = not args.quiet
    try:
        if args.root:
            root = Path(args.root)
        else:
            root = Path(args.data_dir)
            fetch_and_extract(args.splits_url, root, archive=args.splits_archive, sha256=args.splits_sha256,
                              md5=args.splits_md5, resume=not args.no_resume, progress=progress)
            fetch_and_extract(args.url, root, archive=args.archive, sha256=args.sha256, md5=args.md5,
                              resume=not args.no_resume, progress=progress)
            if after_extract is not None:
                after_extract(root)
        report = build(root, args.out or root, split=args.split, workers=args.workers,
                       val_fraction=args.val_fraction, seed=args.seed, progress=progress)
    except (DownloadError, ArchiveError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if report.accepted else 1


def extract_hmdb51_class_archives(root: Path) -> None:
    """The official HMDB51 archive holds one archive per class (brush_hair.rar, ...): unpack those."""
    for folder in [root] + [p for p in root.iterdir() if p.is_dir() and p.name != "downloads"]:
        extract_nested(folder)
