"""
The dashboard's files (C{static/}: index.html, app.js, style.css), read
into memory once when the site is made, so that serving them never reads
the disk on the reactor; and the root resource that puts them at C{/} and
the API at C{/api}.
"""

from __future__ import annotations

from pathlib import Path

from twisted.web import pages, resource

STATIC_DIR = Path(__file__).resolve().parent / "static"

CONTENT_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
    ".png": b"image/png",
    ".ico": b"image/x-icon",
}


class StaticFile(resource.Resource):
    """One small file, held in memory."""

    isLeaf = True

    def __init__(self, content: bytes, content_type: bytes) -> None:
        super().__init__()
        self.content = content
        self.content_type = content_type

    def render_GET(self, request):
        request.setHeader(b"content-type", self.content_type)
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return self.content


class Root(resource.Resource):
    """C{/}: the dashboard's files (C{/} is index.html) and C{api} under C{/api}."""

    def __init__(self, api: resource.Resource, static_dir: Path = STATIC_DIR) -> None:
        super().__init__()
        self.putChild(b"api", api)
        for path in sorted(static_dir.iterdir()):
            if path.is_file() and path.suffix in CONTENT_TYPES:
                self.putChild(path.name.encode("utf-8"), StaticFile(path.read_bytes(), CONTENT_TYPES[path.suffix]))
        self.putChild(b"", self.children[b"index.html"])

    def getChild(self, path, request):
        return pages.notFound()
