"""A local HTTP file server for download tests (127.0.0.1, port chosen by the OS).

    with serve_files({"data.bin": b"..."}, drop_after=100) as server:
        url = server.url("data.bin")
        ...
        server.requests   # [RequestRecord(path, range_header, status), ...]

* Range requests (``bytes=N-`` and ``bytes=N-M``) get ``206 Partial Content``, unless the
  server is told ``honor_range=False`` (then it sends the whole file with ``200``, like
  servers that ignore Range).
* ``drop_after=N`` makes the first ``drop_count`` responses (for the files named in
  ``drop_names``, default all) announce the full length, send ``N`` bytes of the body and
  then close the connection (an interrupted download).
* Every request is recorded. The server is always shut down when the ``with`` block ends.
"""
from __future__ import annotations

import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable, Iterator, Mapping


@dataclass(frozen=True)
class RequestRecord:
    path: str
    range_header: str | None
    status: int


class LocalFileServer:
    """State shared by the handler threads: files, behaviour switches and the request log."""

    def __init__(self, files: Mapping[str, bytes], *, honor_range: bool = True,
                 drop_after: int | None = None, drop_count: int = 1, drop_names: Iterable[str] | None = None):
        self.files = dict(files)
        self.honor_range = honor_range
        self.drop_after = drop_after
        self.drops_left = drop_count if drop_after is not None else 0
        self.drop_names = set(drop_names) if drop_names is not None else None
        self.requests: list[RequestRecord] = []
        self.lock = threading.Lock()
        self.httpd: ThreadingHTTPServer | None = None

    def url(self, name: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def _record(self, path: str, range_header: str | None, status: int) -> None:
        with self.lock:
            self.requests.append(RequestRecord(path, range_header, status))

    def _take_drop(self, name: str) -> bool:
        if self.drop_names is not None and name not in self.drop_names:
            return False
        with self.lock:
            if self.drops_left > 0:
                self.drops_left -= 1
                return True
            return False


def _handler_for(state: LocalFileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args) -> None:  # keep test output quiet
            return

        def do_GET(self) -> None:
            name = self.path.lstrip("/").split("?", 1)[0]
            range_header = self.headers.get("Range")
            data = state.files.get(name)
            if data is None:
                state._record(self.path, range_header, 404)
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()
                return
            start, end, status = 0, len(data) - 1, 200
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header or "")
            if m and state.honor_range:
                start = int(m.group(1))
                end = min(int(m.group(2)), len(data) - 1) if m.group(2) else len(data) - 1
                if start >= len(data):
                    state._record(self.path, range_header, 416)
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    return
                status = 206
            body = data[start:end + 1]
            state._record(self.path, range_header, status)
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
            self.send_header("Connection", "close")
            self.end_headers()
            if state.drop_after is not None and state._take_drop(name):
                self.wfile.write(body[:state.drop_after])
                self.wfile.flush()
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self.wfile.write(body)
            self.wfile.flush()

    return Handler


@contextmanager
def serve_files(files: Mapping[str, bytes], *, honor_range: bool = True, drop_after: int | None = None,
                drop_count: int = 1, drop_names: Iterable[str] | None = None) -> Iterator[LocalFileServer]:
    """Serve ``files`` (name -> bytes) on 127.0.0.1 for the duration of the ``with`` block."""
    state = LocalFileServer(files, honor_range=honor_range, drop_after=drop_after, drop_count=drop_count,
                            drop_names=drop_names)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(state))
    httpd.daemon_threads = True
    state.httpd = httpd
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
