"""Download, verify and extract dataset archives.

* :func:`download` -- urllib, resumes ``dest.part`` with an HTTP Range request, verifies
  SHA-256/MD5, deletes a file whose checksum does not match.
* :func:`extract` -- zip / tar(.gz/.bz2/.xz) refusing absolute paths, ``..`` members and
  links that leave the destination; .rar through ``unrar``/``7z``/``7zz``/``bsdtar``.
* :func:`fetch_and_extract` -- both, skipping an extraction already done.
"""
from __future__ import annotations

import hashlib
import os
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

from tqdm.auto import tqdm

__all__ = ["ArchiveError", "ChecksumError", "DownloadError", "download", "extract", "extract_nested",
           "fetch_and_extract", "file_digest"]

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
