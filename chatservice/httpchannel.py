"""What the metrics port and the web front end's HTTP both need of Twisted's.

Both serve small requests without a body (a scrape, the chat page, a
WebSocket's upgrade) to anyone who connects, on Twisted's C{HTTPChannel};
L{BodilessChannel} is that channel with the two defences they share, and
L{answer} the whole answer a refused connection gets before it is closed.
"""

from twisted.web.http import HTTPChannel, Request


def answer(status: bytes, text: bytes) -> bytes:
    """A whole HTTP answer with C{text}, after which the server closes."""
    return (
        b"HTTP/1.1 " + status + b"\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: " + str(len(text)).encode("ascii") + b"\r\n"
        b"Connection: close\r\n"
        b"\r\n" + text
    )


#: The answer to a request with a body, after which the server closes.
NO_BODY = answer(b"413 Content Too Large", b"no request body is accepted here\n")


class BodilessChannel(HTTPChannel):
    """Twisted's HTTP/1.1 channel, refusing bodies and pipelined requests.

    - A request that announces a body is refused before any of it is read:
      Twisted would keep the body (in a temporary file past 100 KB), then
      answer C{405}.
    - A request sent before the answer to the one before it (browsers and
      Prometheus do not pipeline) is in the buffer already when this one's
      head ends: Twisted would answer every request of a read at once (one
      64 KiB read holds some 2,000; on the metrics port that took 0.4 s of
      the reactor and queued 7 MB for the client).  This one is answered
      with C{Connection: close}, and what follows it is not read.
    """

    def allHeadersReceived(self) -> None:
        """Refuse a request with a body before reading it; serve the others.

        C{length} is the Content-Length, or None when the body is chunked.
        """
        if self.length != 0:
            self.transport.write(NO_BODY)
            self.loseConnection()
            return
        super().allHeadersReceived()

    def checkPersistence(self, request: Request, version: bytes) -> bool:
        """Keep the connection for the next request, unless it was pipelined."""
        if self._buffer:
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return super().checkPersistence(request, version)  # type: ignore[no-any-return]
