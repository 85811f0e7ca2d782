"""asyncio-streams chat server with the protocol of naive_twisted.py.

A new connection is asked "What's your name?"; the first line is the name
(answered with "Welcome, NAME!"); every later line is written to every
*other* client as "<name> text".

By default lines are written with writer.write() and never drained, so a
client that stops reading makes the server buffer without bound. With
--drain the broadcasting coroutine awaits writer.drain() after each write,
so a stalled client blocks the broadcast of whoever is sending.

Usage: python asyncio_chat.py PORT [--drain]
"""

import argparse
import asyncio


class Server:
    """The users, by name, and whether to await drain()."""

    def __init__(self, drain):
        self.drain = drain
        self.users = {}  # name -> StreamWriter

    async def handle(self, reader, writer):
        """Serve one connection: a name, then chat lines."""
        name = None
        try:
            writer.write(b"What's your name?\n")
            while name is None:
                line = await reader.readline()
                if not line:
                    return
                cand = line.rstrip(b"\r\n").decode("utf-8", "replace").strip()
                if cand in self.users:
                    writer.write(b"Name taken, please choose another.\n")
                    continue
                name = cand
                self.users[name] = writer
                writer.write(f"Welcome, {name}!\n".encode())
            prefix = b"<" + name.encode("utf-8") + b"> "
            while True:
                line = await reader.readline()
                if not line:
                    break
                if not line.endswith(b"\n"):
                    line += b"\n"
                msg = prefix + line
                for other in list(self.users.values()):
                    if other is writer:
                        continue
                    other.write(msg)
                    if self.drain:
                        try:
                            await other.drain()
                        except (ConnectionError, RuntimeError):
                            pass
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            if name is not None and self.users.get(name) is writer:
                del self.users[name]
            writer.close()


async def main():
    """Listen on 127.0.0.1:PORT and serve."""
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument(
        "--drain", action="store_true", help="await writer.drain() after every write"
    )
    args = ap.parse_args()
    srv = Server(args.drain)
    server = await asyncio.start_server(srv.handle, "127.0.0.1", args.port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
