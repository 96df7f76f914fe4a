"""Tests for lensforge.data.download against a throwaway local HTTP server (never the internet)."""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading

import pytest

from lensforge.data.download import RemoteFile, data_root, fetch, md5sum
from lensforge.errors import DataError

PAYLOAD = bytes(range(256)) * 1000  # 256 KB: several read chunks, still instant
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves `server.files`, honours `Range: bytes=N-`, and can misbehave on request."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.log.append((self.path, self.headers.get("Range"), self.headers.get("User-Agent")))
        data = srv.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and self.path not in srv.ignore_range:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path in srv.drop:  # promise the whole body, send half, hang up
            body = body[: len(body) // 2]
            self.close_connection = True
        # Recorded before the write: once the body is out the client may finish and the test read
        # `sent` before this thread gets back to it (seen under load: [] instead of [156000]).
        srv.sent.append(len(body))
        self.wfile.write(body)


@pytest.fixture(scope="module")
def _server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def server(_server):
    _server.files, _server.drop, _server.ignore_range = {}, set(), set()
    _server.log, _server.sent = [], []
    _server.url = f"http://127.0.0.1:{_server.server_address[1]}"
    return _server


def _dead_url() -> str:
    """A localhost URL nothing listens on, so the connection is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone.bin"


def _remote(*urls, md5=PAYLOAD_MD5, name="data.bin"):
    return RemoteFile(name=name, urls=tuple(urls), md5=md5)


def test_download_verifies_and_renames(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    out = fetch(_remote(server.url + "/data.bin"), tmp_path / "sub", progress=False, timeout=5)
    assert out == tmp_path / "sub" / "data.bin"
    assert out.read_bytes() == PAYLOAD and md5sum(out) == PAYLOAD_MD5
    assert not (tmp_path / "sub" / "data.bin.part").exists()
    path, rng, agent = server.log[0]
    assert rng is None and agent.startswith("lensforge")


def test_resume_sends_range_and_appends(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD[:100_000])
    out = fetch(_remote(server.url + "/data.bin"), tmp_path, progress=False, timeout=5)
    assert out.read_bytes() == PAYLOAD
    assert server.log[0][1] == "bytes=100000-"
    assert server.sent == [len(PAYLOAD) - 100_000]


def test_server_ignoring_range_restarts_from_scratch(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    server.ignore_range.add("/data.bin")
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes from somewhere else")
    out = fetch(_remote(server.url + "/data.bin"), tmp_path, progress=False, timeout=5)
    assert out.read_bytes() == PAYLOAD


def test_corrupt_part_is_discarded_and_refetched(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    (tmp_path / "data.bin.part").write_bytes(b"\xff" * 1000)  # wrong prefix, resumed -> bad md5
    out = fetch(_remote(server.url + "/data.bin"), tmp_path, progress=False, timeout=5)
    assert out.read_bytes() == PAYLOAD
    assert [r for _, r, _ in server.log] == ["bytes=1000-", None]


def test_interrupted_download_keeps_part_and_next_run_resumes(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    server.drop.add("/data.bin")
    remote = _remote(server.url + "/data.bin")
    with pytest.raises(DataError, match="closed after"):
        fetch(remote, tmp_path, progress=False, timeout=5)
    part = tmp_path / "data.bin.part"
    assert not (tmp_path / "data.bin").exists()
    assert part.read_bytes() == PAYLOAD[: len(PAYLOAD) // 2]
    server.drop.clear()
    out = fetch(remote, tmp_path, progress=False, timeout=5)
    assert out.read_bytes() == PAYLOAD
    assert server.log[-1][1] == f"bytes={len(PAYLOAD) // 2}-"


def test_bad_checksum_falls_back_to_mirror(server, tmp_path):
    server.files["/bad.bin"] = PAYLOAD[:-1] + b"\x00"
    server.files["/good.bin"] = PAYLOAD
    out = fetch(_remote(server.url + "/bad.bin", server.url + "/good.bin"), tmp_path,
                progress=False, timeout=5)
    assert out.read_bytes() == PAYLOAD
    assert [p for p, _, _ in server.log] == ["/bad.bin", "/good.bin"]


def test_all_urls_failing_raises_one_line_error(server, tmp_path):
    urls = (server.url + "/missing.bin", _dead_url())
    with pytest.raises(DataError) as exc:
        fetch(_remote(*urls), tmp_path, progress=False, timeout=5)
    msg = str(exc.value)
    assert "\n" not in msg
    assert "data.bin" in msg and str((tmp_path / "data.bin").resolve()) in msg
    assert all(u in msg for u in urls)
    assert "refused" in msg.lower()  # the last failure's reason
    assert not (tmp_path / "data.bin").exists()


def test_checksum_mismatch_everywhere_names_both_checksums(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    with pytest.raises(DataError) as exc:
        fetch(_remote(server.url + "/data.bin", md5="0" * 32), tmp_path, progress=False, timeout=5)
    assert "0" * 32 in str(exc.value) and PAYLOAD_MD5 in str(exc.value)
    assert list(tmp_path.iterdir()) == []  # no final file and no .part left behind


def test_download_disabled_raises_without_network(server, tmp_path):
    server.files["/data.bin"] = PAYLOAD
    with pytest.raises(DataError, match="data.bin is missing.*disabled"):
        fetch(_remote(server.url + "/data.bin"), tmp_path, download=False)
    assert server.log == [] and list(tmp_path.iterdir()) == []


def test_existing_file_is_returned_unverified(tmp_path):
    (tmp_path / "data.bin").write_bytes(b"a re-packed copy")
    out = fetch(_remote(_dead_url(), md5="0" * 32), tmp_path, download=True)
    assert out.read_bytes() == b"a re-packed copy"


def test_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    out = fetch(_remote(src.as_uri()), tmp_path / "dest", progress=False)
    assert out.read_bytes() == PAYLOAD


def test_progress_bar_goes_to_stderr(server, tmp_path, capsys):
    server.files["/data.bin"] = PAYLOAD
    fetch(_remote(server.url + "/data.bin"), tmp_path, progress=True, timeout=5)
    out, err = capsys.readouterr()
    assert out == "" and "data.bin" in err


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("LENSFORGE_DATA_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("LENSFORGE_DATA_DIR")
    assert data_root() == tmp_path / "xdg" / "lensforge" / "datasets"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data_root() == tmp_path / "home" / ".cache" / "lensforge" / "datasets"


def test_md5sum_matches_hashlib(tmp_path):
    (tmp_path / "x").write_bytes(PAYLOAD)
    assert md5sum(tmp_path / "x") == PAYLOAD_MD5
