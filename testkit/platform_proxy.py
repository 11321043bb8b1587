"""A loopback stand-in for Databricks Apps' reverse proxy: it adds the platform's `X-Forwarded-*` headers to every
request it passes to the app, the WebSocket handshake included.

Why not the browser: Chromium 150 (Debian's, with Playwright 1.65) sends a context's extra HTTP headers on page and
asset requests but not on the WebSocket handshake, and Streamlit's `st.context.headers` are that handshake's. The
platform puts the headers on at its proxy, so the tests do too (docs.databricks.com/dev-tools/databricks-apps/
http-headers: the proxy "forwards" `X-Forwarded-Access-Token` and the identity headers with each request).

HTTP/1.1 only, as a browser speaks to a loopback app: request heads are rewritten one by one on a kept-alive
connection; a request body is passed on by its Content-Length; after an `Upgrade` both directions are piped as they
are. Chunked request bodies (which browsers do not send to Streamlit) end the rewriting and pipe the rest.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

HEAD_LIMIT = 1 << 20  # bytes; a long deep link makes request heads over 16 KB
CHUNK = 1 << 16


class PlatformProxy:
    """Listens on a free loopback port and forwards to `upstream_port`, adding `headers` to each request head."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.headers: dict[str, str] = {}
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="platform-proxy", daemon=True)
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def forward(self, headers: Mapping[str, str]) -> None:
        """Headers for the requests from now on (the signed-in viewer changed); `{}` forwards none."""
        self.headers = dict(headers)

    def start(self) -> PlatformProxy:
        self._thread.start()
        listening = asyncio.start_server(self._serve, "127.0.0.1", 0, limit=HEAD_LIMIT)
        self._server = asyncio.run_coroutine_threadsafe(listening, self._loop).result(timeout=10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _close_all(self) -> None:
        """Stop listening and end the connections still open, so none outlives the loop."""
        if self._server is not None:
            self._server.close()
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def rewrite(self, head: bytes) -> tuple[bytes, int | None]:
        """The head with our headers in place of any the client sent; its body length (None: pipe the rest)."""
        request_line, *lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        ours = {name.lower() for name in self.headers}
        kept = [line for line in lines if line.split(":", 1)[0].strip().lower() not in ours]
        fields = {line.split(":", 1)[0].strip().lower(): line.split(":", 1)[-1].strip() for line in kept}
        added = [f"{name}: {value}" for name, value in self.headers.items()]
        rewritten = "\r\n".join([request_line, *kept, *added]) + "\r\n\r\n"
        upgrade = "upgrade" in fields.get("connection", "").lower()
        length = None if upgrade or "transfer-encoding" in fields else int(fields.get("content-length", "0"))
        return rewritten.encode("latin-1"), length

    async def _serve(self, client: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        try:
            upstream, upstream_out = await asyncio.open_connection("127.0.0.1", self.upstream_port, limit=HEAD_LIMIT)
        except OSError:
            client_out.close()
            return
        answers = asyncio.ensure_future(_pipe(upstream, client_out))
        try:
            while True:
                head, length = self.rewrite(await client.readuntil(b"\r\n\r\n"))
                upstream_out.write(head)
                if length is None:
                    await _pipe(client, upstream_out)
                    break
                if length:
                    upstream_out.write(await client.readexactly(length))
                await upstream_out.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # the browser closed the connection
        finally:
            upstream_out.close()
            await asyncio.wait([answers], timeout=5)
            client_out.close()


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    try:
        while chunk := await source.read(CHUNK):
            sink.write(chunk)
            await sink.drain()
    except ConnectionError:
        pass
    finally:
        if sink.can_write_eof() and not sink.is_closing():
            sink.write_eof()


@contextmanager
def platform_proxy(upstream_port: int) -> Iterator[PlatformProxy]:
    proxy = PlatformProxy(upstream_port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
