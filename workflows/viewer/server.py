"""The viewer's local HTTP server: a fixed table of resources, nothing read from disk by request path.

Only the page's own files (package data, listed once at start) and the field, its header and the LR image are
served; any other path is 404, a malformed one 400, any method but GET/HEAD 405, and a Host header other than
this server's own name 403 (a page on another site cannot reach it through DNS rebinding). Errors are short plain
text, never a traceback.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import urlsplit

from workflows.viewer.packing import PackedField

#: Page assets shipped as package data, with their content types.
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


@dataclass
class ViewerContent:
    """Everything the page can ask for: the packed field, the LR image (PNG) and a description."""

    packed: PackedField
    lr_png: bytes
    info: dict = field(default_factory=dict)

    def header_json(self) -> bytes:
        return json.dumps({**self.packed.header(), **self.info}, sort_keys=True).encode()


def static_files() -> dict[str, tuple[bytes, str]]:
    """'/name' -> (bytes, content type) for every asset in the package's static folder, read once."""
    folder = resources.files("workflows.viewer") / "static"
    table = {}
    for entry in folder.iterdir():
        kind = STATIC_TYPES.get("." + entry.name.rsplit(".", 1)[-1])
        if entry.is_file() and kind:
            table["/" + entry.name] = (entry.read_bytes(), kind)
    if "/index.html" not in table:
        raise FileNotFoundError("the viewer's page (workflows/viewer/static/index.html) is missing from the install")
    table["/"] = table["/index.html"]
    return table


def routes(content: ViewerContent) -> dict[str, tuple[bytes, str]]:
    """The complete table of what the server answers."""
    table = static_files()
    table["/field.json"] = (content.header_json(), "application/json")
    table["/field.bin"] = (content.packed.data, "application/octet-stream")
    table["/lr.png"] = (content.lr_png, "image/png")
    return table


class ViewerHandler(BaseHTTPRequestHandler):
    server: ViewerServer
    server_version = "p2g-view"
    sys_version = ""
    default_request_version = "HTTP/1.0"  # so that even a garbled request line gets a status line back

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # any other method: 405 instead of http.server's 501
            return self._method_not_allowed
        raise AttributeError(name)

    def _method_not_allowed(self) -> None:
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD are served")

    def _answer(self, with_body: bool) -> None:
        try:
            status, body, kind = self._resolve()
        except Exception:
            status, body, kind = HTTPStatus.INTERNAL_SERVER_ERROR, b"internal error\n", "text/plain; charset=utf-8"
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def _resolve(self) -> tuple[int, bytes, str]:
        text = "text/plain; charset=utf-8"
        raw = self.path
        path = urlsplit(raw).path
        if not raw.startswith("/") or raw.startswith("//") or any(bad in path for bad in ("..", "\\", "\0", "%")):
            return HTTPStatus.BAD_REQUEST, b"malformed path\n", text
        host = (self.headers.get("Host") or "").lower()
        if host not in self.server.allowed_hosts:
            return HTTPStatus.FORBIDDEN, b"unexpected Host header: open the URL that p2g view printed\n", text
        if path not in self.server.table:
            return HTTPStatus.NOT_FOUND, b"not found: this server only serves the viewer page and its field\n", text
        body, kind = self.server.table[path]
        return HTTPStatus.OK, body, kind

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Short plain-text errors (used by http.server itself for malformed request lines).

        http.server answers an unknown HTTP version with 505; a client can only get there by a malformed request,
        so it is a 400 here.
        """
        if code == HTTPStatus.HTTP_VERSION_NOT_SUPPORTED:
            code, message = HTTPStatus.BAD_REQUEST, "unsupported HTTP version"
        body = f"{code} {message or HTTPStatus(code).phrase}\n".encode("utf-8", "replace")
        try:
            self.send_response(code, message)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Connection", "close")
            if code == HTTPStatus.METHOD_NOT_ALLOWED:
                self.send_header("Allow", "GET, HEAD")
            self.end_headers()
            if self.command != "HEAD" and code >= 200 and code not in (204, 304):
                self.wfile.write(body)
        except OSError:
            pass
        self.close_connection = True

    def log_message(self, format: str, *args) -> None:
        """Quiet: the terminal shows only the URL and errors of the command itself."""


class ViewerServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer on 127.0.0.1 that answers from a fixed route table."""

    daemon_threads = True

    def __init__(self, content: ViewerContent, port: int = 0, host: str = "127.0.0.1") -> None:
        self.table = routes(content)
        try:
            super().__init__((host, port), ViewerHandler)
        except OSError as err:
            raise ValueError(
                f"cannot listen on {host}:{port} ({err.strerror or err}); "
                f"pick another --port, or --port 0 for any free one"
            ) from None
        bound = self.server_address[1]
        self.allowed_hosts = {f"{name}:{bound}" for name in (host, "localhost", "127.0.0.1")}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-answer is not worth a traceback on the terminal."""

    def start_background(self) -> threading.Thread:
        """Serve in a daemon thread (tests, notebooks); `shutdown()` stops it."""
        thread = threading.Thread(target=self.serve_forever, name="p2g-view", daemon=True)
        thread.start()
        return thread
