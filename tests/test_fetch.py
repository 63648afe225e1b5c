"""Downloading over real HTTP from a local server: a cut download resumes, a server that ignores
ranges makes it start again, and a damaged file or a web page is never kept."""

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mmlib.store.fetch import DownloadError, download

BODY = bytes(range(256)) * 4096  # 1 MiB, not all one byte


class Server:
    """A local HTTP server for BODY. `cut_after`: send that many bytes of the next answer, then
    close the connection; `ranges`: honour Range requests (206) or ignore them (200)."""

    def __init__(self):
        self.cut_after, self.ranges, self.body, self.requests = None, True, BODY, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.headers.get("Range"))
                start = 0
                if server.ranges and self.headers.get("Range"):
                    start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-"))
                    self.send_response(206)
                else:
                    self.send_response(200)
                rest = server.body[start:]
                self.send_header("Content-Length", str(len(rest)))
                self.end_headers()
                if server.cut_after is not None:
                    rest, server.cut_after = rest[: server.cut_after], None
                self.wfile.write(rest)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/pack.zip"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()


def test_a_cut_download_says_so_keeps_its_part_and_resumes_where_it_stopped(server, tmp_path):
    target = tmp_path / "pack.zip"
    server.cut_after = 300_000
    with pytest.raises(DownloadError, match="broke off after 300,000 of 1,048,576 bytes.*resume"):
        download(server.url, target, progress=False)
    assert not target.exists()
    assert (tmp_path / "pack.zip.part").stat().st_size == 300_000
    sha = hashlib.sha256(BODY).hexdigest()
    assert download(server.url, target, sha256=sha, progress=False) == target
    assert target.read_bytes() == BODY and not (tmp_path / "pack.zip.part").exists()
    assert server.requests == [None, "bytes=300000-"]


def test_a_server_that_ignores_ranges_makes_it_start_again(server, tmp_path):
    target = tmp_path / "pack.zip"
    (tmp_path / "pack.zip.part").write_bytes(b"stale bytes of an older download")
    server.ranges = False
    download(server.url, target, progress=False)
    assert target.read_bytes() == BODY


def test_a_damaged_file_or_a_web_page_is_refused_and_nothing_is_kept(server, tmp_path):
    target = tmp_path / "pack.zip"
    with pytest.raises(DownloadError, match="not the expected one"):
        download(server.url, target, sha256="0" * 64, progress=False)
    server.body = b"<!DOCTYPE html><html><body>Not found</body></html>"
    with pytest.raises(DownloadError, match="web page"):
        download(server.url, target, progress=False)
    assert list(tmp_path.iterdir()) == []
