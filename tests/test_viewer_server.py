"""`p2g view` without a browser: field packing, the server's fixed routes and refusals, the verb's errors."""

from __future__ import annotations

import http.client
import io
import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from gaussian_field import GaussianField, render, save_field
from gaussian_field.image_io import write_image
from sr_model.files.checkpoint import save_checkpoint
from tests.cli_checks import assert_one_line_error
from tests.test_tiling import tiny_model
from tests.viewer_fields import field, lr, photo_field  # noqa: F401  (fixtures)
from workflows import view_cmd
from workflows.cli import cli
from workflows.viewer.content import content_for_field, load_view_content
from workflows.viewer.packing import FLOAT16_TOLERANCE, centre_window, pack_field, unpack_field
from workflows.viewer.server import ViewerServer


@pytest.fixture(scope="module")
def server(field, lr):
    srv = ViewerServer(content_for_field(field, lr, {"title": "crop"}), 0)
    srv.start_background()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(server, method, path, headers=None, body=None):
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def raw_request(server, text: bytes) -> bytes:
    with socket.create_connection(server.server_address[:2], timeout=10) as sock:
        sock.sendall(text)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------- packing


def test_a_photo_field_travels_as_float16_within_one_level_at_unchecked_scales(field):
    packed = pack_field(field)
    assert packed.dtype == "float16" and len(packed.data) == field.num_gaussians * 8 * 2
    back = unpack_field(packed)
    for scale in (2.5, 6):  # not the scales the packer checked
        diff = (render(back, scale=scale) - render(field, scale=scale)).abs().max()
        assert float(diff) < FLOAT16_TOLERANCE


def test_a_field_that_float16_would_change_by_a_level_travels_as_float32(field):
    bright = GaussianField(field.means, field.chol, field.colors * 40, field.h, field.w, field.k)
    packed = pack_field(bright)
    assert packed.dtype == "float32" and packed.float16_error >= FLOAT16_TOLERANCE
    back = unpack_field(packed)
    assert torch.equal(back.chol, bright.chol) and torch.equal(back.colors, bright.colors)
    assert float((back.means - bright.means).abs().max()) < 1e-5


def test_float16_is_checked_on_a_centre_window_of_large_fields(photo):
    big = photo_field(photo("coffee", size=160)[:140].astype(np.float32))
    window = centre_window(big, 64)
    assert (window.h, window.w) == (64, 64)
    top, left = (140 - 64) // 2, (160 - 64) // 2
    n = 2 * 160  # lattice columns
    first = 2 * top * n + 2 * left
    assert torch.equal(window.means[0, 0], big.means[0, first] - torch.tensor([left, top], dtype=big.dtype))
    assert torch.equal(window.colors[0, 1], big.colors[0, first + 1])


# ---------------------------------------------------------------- server


def test_serves_the_page_the_field_and_the_lr_image(server, field, lr):
    response, page = request(server, "GET", "/")
    assert response.status == 200 and b"viewer.js" in page
    assert response.getheader("Content-Type").startswith("text/html")
    for asset in ("/viewer.js", "/viewer.css", "/index.html"):
        assert request(server, "GET", asset)[0].status == 200
    header = json.loads(request(server, "GET", "/field.json?cache=1")[1])
    assert (header["h"], header["w"], header["k"], header["count"]) == (12, 16, 2, field.num_gaussians)
    assert header["title"] == "crop"
    response, data = request(server, "GET", "/field.bin")
    assert len(data) == field.num_gaussians * 8 * (2 if header["dtype"] == "float16" else 4)
    png = np.asarray(Image.open(io.BytesIO(request(server, "GET", "/lr.png")[1])))
    assert np.array_equal(png, np.round(lr * 255).astype(np.uint8))
    response, data = request(server, "HEAD", "/field.bin")
    assert response.status == 200 and data == b"" and int(response.getheader("Content-Length")) > 0


@pytest.mark.parametrize(
    "path, status",
    [
        ("/../setup.cfg", 400),
        ("/static/../../setup.cfg", 400),
        ("/%2e%2e/setup.cfg", 400),
        ("/viewer.js/../field.bin", 400),
        ("//etc/passwd", (400, 404)),
        ("/..%2fsetup.cfg", 400),
        ("/a\\b", 400),
        ("/etc/passwd", 404),
        ("/static/index.html", 404),
        ("/packing.py", 404),
        ("/__init__.py", 404),
        ("/server.py", 404),
        ("/field.npz", 404),
        ("/favicon.ico", 404),
        ("/index.html/", 404),
        ("http://example.com/field.bin", 400),
        ("*", 400),
    ],
)
def test_paths_outside_the_route_table_are_refused(server, path, status):
    response, body = request(server, "GET", path)
    assert response.status in (status if isinstance(status, tuple) else (status,))  # http.server may fold "//"
    assert b"Traceback" not in body and len(body) < 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"])
def test_methods_other_than_get_and_head_are_405(server, method):
    response, body = request(server, method, "/field.bin", body=b"x")
    assert response.status == 405 and response.getheader("Allow") == "GET, HEAD" and b"Traceback" not in body


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * 200 + b"\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ],
)
def test_malformed_requests_get_4xx_without_traceback(server, raw):
    answer = raw_request(server, raw)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 500 and b"Traceback" not in answer


def test_a_foreign_host_header_is_refused(server):
    response, body = request(server, "GET", "/field.bin", headers={"Host": "evil.example:80"})
    assert response.status == 403 and b"Host" in body
    port = server.server_address[1]
    assert request(server, "GET", "/", headers={"Host": f"localhost:{port}"})[0].status == 200


def test_a_bug_while_answering_is_500_without_traceback(server, monkeypatch):
    monkeypatch.setattr(server, "table", None)
    response, body = request(server, "GET", "/")
    assert response.status == 500 and body == b"internal error\n"


# ---------------------------------------------------------------- content and the verb


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_bad_input_is_one_line_exit_2(tmp_path, lr):
    write_image(tmp_path / "lr.png", lr)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    (tmp_path / "broken.png").write_bytes(b"not a png")
    assert_one_line_error(
        run("view", tmp_path / "lr.png", "--no-browser", "--checkpoint", tmp_path / "gone.pt"), "gone.pt"
    )
    assert_one_line_error(run("view", tmp_path / "missing.npz", "--no-browser"), "does not exist")
    assert_one_line_error(run("view", tmp_path, "--no-browser"), "folder")
    assert_one_line_error(run("view", tmp_path / "other.npz", "--no-browser"), "not a pixel2gauss field")
    assert_one_line_error(run("view", tmp_path / "broken.png", "--checkpoint", tmp_path / "no.pt"), "broken.png")
    assert run("view", tmp_path / "lr.png", "--port", "70000").exit_code == 2
    assert_one_line_error(
        run("view", tmp_path / "lr.png", "--lr", tmp_path / "lr.png", "--checkpoint", "x.pt"), "--lr is for a FIELD.npz"
    )


def test_a_field_shows_bicubic_of_its_lr_image_when_given(tmp_path, field, lr):
    save_field(field, tmp_path / "f.npz")
    write_image(tmp_path / "lr.png", lr)
    write_image(tmp_path / "small.png", lr[:6])
    content = load_view_content(tmp_path / "f.npz", lr_image=tmp_path / "lr.png")
    assert json.loads(content.header_json())["bicubic_of"] == "lr.png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(content.lr_png))), np.round(lr * 255).astype(np.uint8))
    assert_one_line_error(run("view", tmp_path / "f.npz", "--lr", tmp_path / "small.png"), "16x6", "16x12")


def test_a_busy_port_is_one_line_exit_2(tmp_path, field):
    save_field(field, tmp_path / "f.npz")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert_one_line_error(run("view", tmp_path / "f.npz", "--port", port, "--no-browser"), str(port), "--port")


def test_an_image_is_encoded_once_by_the_checkpoint(tmp_path, lr):
    model = tiny_model("lite")
    save_checkpoint(tmp_path / "tiny.pt", model)
    write_image(tmp_path / "lr.png", lr)
    content = load_view_content(tmp_path / "lr.png", tmp_path / "tiny.pt")
    header = json.loads(content.header_json())
    assert (header["h"], header["w"]) == lr.shape[:2] and header["bicubic_of"] == "the LR image"
    with torch.no_grad():
        expected = model.encode(torch.from_numpy(np.round(lr * 255) / 255).float().permute(2, 0, 1)[None])
    assert torch.allclose(unpack_field(content.packed).colors, expected.colors[0], atol=2e-3)


def test_the_verb_prints_the_url_opens_it_and_serves_until_ctrl_c(tmp_path, field, monkeypatch):
    save_field(field, tmp_path / "f.npz")
    opened, answers = [], []

    def serve_one_then_ctrl_c(self):
        client = threading.Thread(target=lambda: answers.append(request(self, "GET", "/field.json")[0].status))
        client.start()
        self.handle_request()
        client.join()
        raise KeyboardInterrupt

    monkeypatch.setattr(ViewerServer, "serve_forever", serve_one_then_ctrl_c)
    monkeypatch.setattr(view_cmd.webbrowser, "open", opened.append)
    result = run("view", tmp_path / "f.npz", "--port", "0")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("f.npz  16x12 LR, 768 Gaussians, sent as float16") and lines[-1] == "viewer stopped"
    url = lines[1].split()[2]
    assert lines[1].startswith("viewer at http://127.0.0.1:") and answers == [200]
    deadline = time.monotonic() + 5
    while not opened and time.monotonic() < deadline:
        time.sleep(0.05)
    assert opened == [url]


@pytest.mark.slow
def test_the_verb_serves_until_ctrl_c(tmp_path, field):
    save_field(field, tmp_path / "f.npz")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workflows.cli", "view", str(tmp_path / "f.npz"), "--port", "0", "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[1],
    )
    try:
        first = proc.stdout.readline()
        second = proc.stdout.readline()
        assert "f.npz  16x12 LR, 768 Gaussians, sent as float16" in first, first
        url = second.split()[2]
        assert second.startswith("viewer at http://127.0.0.1:") and url.endswith("/")
        port = int(url.rsplit(":", 1)[1].strip("/"))
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/field.json")
        assert json.loads(conn.getresponse().read())["bicubic_of"].startswith("the field rendered at x1")
        proc.send_signal(2)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "viewer stopped" in out and "Traceback" not in err


def test_without_chromium_the_browser_helper_says_what_to_install(monkeypatch):
    from workflows.viewer import headless

    monkeypatch.delenv("P2G_CHROMIUM", raising=False)
    monkeypatch.delenv("P2G_CHROMEDRIVER", raising=False)
    monkeypatch.setattr(headless.shutil, "which", lambda name: None)
    with pytest.raises(headless.BrowserUnavailable, match="no chromium or chromedriver found: install them"):
        headless.find_browser()
    monkeypatch.setattr(headless.shutil, "which", lambda name: "/usr/bin/chromium" if name == "chromium" else None)
    with pytest.raises(headless.BrowserUnavailable, match="no chromedriver found.*apt-get install chromium"):
        headless.find_browser()
