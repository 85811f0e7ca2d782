"""The chat page's static files, served by the web front end.

The page is a fixed bundle shipped inside the package
(C{chatservice/frontends/static/}): each file is read once, when the site
is built, and served from memory under its own name only.  Nothing is
looked up on disk per request, so no path (C{..}, encoded slashes,
symbolic links) can reach another file: any other path is a 404.

Every answer carries:

  - its content type, with the charset;
  - C{Cache-Control: no-cache} and an C{ETag} (the content's hash): a
    browser revalidates and gets a C{304} until the server is upgraded;
  - a C{Content-Security-Policy} allowing scripts, styles and connections
    to this origin only, no inline script, no plugins, no framing;
  - C{X-Content-Type-Options: nosniff} and C{Referrer-Policy: no-referrer}.
"""

import hashlib
from importlib.resources import files

from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

#: The files of the bundle, by the path they are served at, with their type.
BUNDLE = {
    b"": ("index.html", b"text/html; charset=utf-8"),
    b"chat.js": ("chat.js", b"text/javascript; charset=utf-8"),
    b"chat.css": ("chat.css", b"text/css; charset=utf-8"),
}

#: The page's policy: nothing from elsewhere, no inline script or style.
#: (CSP 3's 'self' covers ws: and wss: to this host, for the WebSocket.)
CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; "
    b"connect-src 'self'; img-src 'self'; base-uri 'none'; "
    b"form-action 'none'; frame-ancestors 'none'"
)

#: Headers on every answer of the page's files (404s included).
HEADERS = {
    b"Content-Security-Policy": CONTENT_SECURITY_POLICY,
    b"X-Content-Type-Options": b"nosniff",
    b"Referrer-Policy": b"no-referrer",
}


def _set_headers(request: Request) -> None:
    for name, value in HEADERS.items():
        request.setHeader(name, value)


class StaticFile(Resource):
    """One file of the bundle, from memory."""

    isLeaf = True

    def __init__(self, data: bytes, content_type: bytes) -> None:
        super().__init__()
        self.data = data
        self.content_type = content_type
        self.etag = b'"' + hashlib.sha256(data).hexdigest()[:32].encode("ascii") + b'"'

    def render_GET(self, request: Request) -> bytes:
        """The file, or C{304} if the browser has it already."""
        _set_headers(request)
        request.setHeader(b"Cache-Control", b"no-cache")
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"not found\n"
        request.setHeader(b"Content-Type", self.content_type)
        if request.setETag(self.etag):
            return b""  # 304 Not Modified
        return self.data


class _NotFound(Resource):
    """A 404 with the page's headers."""

    isLeaf = True

    def render(self, request: Request) -> bytes:
        """Not found, whatever the method."""
        _set_headers(request)
        return notFound().render(request)  # type: ignore[no-any-return]


class PageRoot(Resource):
    """C{/}: the page; its other files by name; anything else is a 404."""

    def __init__(self) -> None:
        super().__init__()
        folder = files(__package__).joinpath("static")
        self._files = {
            path: StaticFile(folder.joinpath(name).read_bytes(), content_type)
            for path, (name, content_type) in BUNDLE.items()
        }

    def getChild(self, path: bytes, request: Request) -> IResource:
        """A file of the bundle, by its exact name, or a 404."""
        return self._files.get(path) or _NotFound()

    def render_GET(self, request: Request) -> bytes:
        """C{/} itself: the page."""
        return self._files[b""].render_GET(request)


def page_root() -> PageRoot:
    """The page's resource tree; put the WebSocket's resource in it."""
    return PageRoot()
