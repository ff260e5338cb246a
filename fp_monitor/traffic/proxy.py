"""`fpmon proxy`: a local reverse proxy that records the fingerprints of an application's own
traffic, whatever language the application is written in.

A plain ASGI application served by uvicorn. `http://LISTEN/<path>` goes to `<upstream>/<path>`
(query string kept) through httpx2's transport alone (no client layer: no default headers,
cookies or redirects are added), and the answer comes back unchanged, a stream chunk by chunk.
Any other request target (`*`, `//host/x`, `http://host/x`, `host:port`) is refused with a 400:
the proxy never sends an application's key to another host than the upstream.
Chat-completions responses are watched on the way (see recording.py) and recorded once each.
The X-Fpmon-Tags request header sets the record's tags and is not forwarded; hop-by-hop headers
stay on their hop. No header is stored or logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
import httpx2
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from fp_monitor.domain.errors import ConfigError
from fp_monitor.domain.text import clean
from fp_monitor.net.redact import redact
from fp_monitor.stopping import on_stop
from fp_monitor.traffic.recording import (
    TAGS_HEADER,
    Exchange,
    Recorder,
    RequestInfo,
    is_chat_completion,
)

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

GRACE_SECONDS = 5.0
"""On SIGTERM, open streams get this long to finish before they are cut."""
REQUEST_PEEK_BYTES = 1024 * 1024
"""A chat request's body is forwarded as it arrives; up to this much is kept to read its model."""
CONNECT_TIMEOUT = 30.0
KEEP_ALIVE_SECONDS = 75
REQUEST_TARGET = "fpmon.request_target"
"""The scope extension in which the served proxy hands the application the request target."""
# RFC 9110 7.6.1: meaningful for one connection only; never forwarded.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)


def end_to_end(
    headers: list[tuple[bytes, bytes]], drop: frozenset[bytes] = frozenset()
) -> list[tuple[bytes, bytes]]:
    """`headers` without the hop-by-hop ones (those the Connection header names included)."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    hop = HOP_BY_HOP | named | drop
    return [(name, value) for name, value in headers if name.lower() not in hop]


class _ClientGone(Exception):
    """The application went away while it was sending its request: nobody to answer."""


class _Upload:
    """The request body, forwarded as it arrives; of a chat request, the first MiB is kept to
    read the model asked for."""

    def __init__(self, receive: Receive, *, keep: bool) -> None:
        self._receive = receive
        self._kept: bytearray | None = bytearray() if keep else None
        self.done = anyio.Event()

    @property
    def kept(self) -> bytes | None:
        return None if self._kept is None else bytes(self._kept)

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            while True:
                message = await self._receive()
                if message["type"] == "http.disconnect":
                    raise _ClientGone
                body: bytes = message.get("body", b"")
                if self._kept is not None:
                    if len(self._kept) + len(body) <= REQUEST_PEEK_BYTES:
                        self._kept += body
                    else:
                        self._kept = None  # too large to read the model from: sent, not kept
                if body:
                    yield body
                if not message.get("more_body", False):
                    return
        finally:
            self.done.set()


class LifespanApp:
    """An ASGI application served by `serve_app`: HTTP requests go to `_http`, and `shutdown`
    runs once the server stops taking requests (what is still queued gets written)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError

    async def shutdown(self) -> None:
        raise NotImplementedError


class ProxyApp(LifespanApp):
    """The ASGI application: forward, relay, record."""

    def __init__(self, upstream: str, recorder: Recorder) -> None:
        parts = urlsplit(upstream)
        self._origin = httpx2.URL(f"{parts.scheme}://{parts.netloc}")
        self._base_path = parts.path.rstrip("/")
        self._base_query = parts.query
        self._recorder = recorder
        # No pool limit: every stream the application opens gets its own upstream connection.
        limits = httpx2.Limits(max_connections=None, max_keepalive_connections=100)
        self._transport = httpx2.AsyncHTTPTransport(limits=limits, trust_env=False)

    async def shutdown(self) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the upstream connections and write the records still queued."""
        await self._transport.aclose()
        await anyio.to_thread.run_sync(self._recorder.flush)

    def upstream_url(self, target: bytes, path: str, query: str) -> httpx2.URL | None:
        """Where a request goes: its path and query under the upstream's; None unless its
        target is a path (origin-form, `/v1/chat/completions`) and the URL made of it stays on
        the upstream's scheme, host and port, under its path (`/..` cannot climb out)."""
        if not target.startswith(b"/") or target.startswith(b"//"):
            return None
        queries = "&".join(q for q in (self._base_query, query) if q)
        try:
            url = self._origin.join(self._base_path + path + ("?" + queries if queries else ""))
        except httpx2.InvalidURL:
            return None
        origin = self._origin
        same_origin = (url.scheme, url.host, url.port) == (origin.scheme, origin.host, origin.port)
        under_base = url.path == self._base_path or url.path.startswith(self._base_path + "/")
        return url if same_origin and under_base else None

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        path = raw_path.decode("latin-1")
        query = scope.get("query_string", b"").decode("latin-1")
        target = scope.get("extensions", {}).get(REQUEST_TARGET, {}).get("raw", raw_path)
        url = self.upstream_url(target, path, query)
        if url is None:
            await _not_a_path(send)
            return
        headers: list[tuple[bytes, bytes]] = list(scope["headers"])
        tags_header = next((v for k, v in headers if k.lower() == TAGS_HEADER.encode()), None)
        forwarded = end_to_end(headers, drop=frozenset({b"host", TAGS_HEADER.encode()}))
        chat = is_chat_completion(scope["method"], path)
        upload = _Upload(receive, keep=chat)
        has_body = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in headers)
        if not has_body:
            upload.done.set()
        request = httpx2.Request(
            scope["method"],
            url,
            headers=forwarded,
            content=upload.chunks() if has_body else None,
            extensions={
                "timeout": {"connect": CONNECT_TIMEOUT, "read": None, "write": None, "pool": None}
            },
        )
        tags = self._recorder.tags_with(tags_header.decode("latin-1") if tags_header else None)
        async with anyio.create_task_group() as group:
            # A client that goes away stops the relay, and so the upstream's generation.
            group.start_soon(_watch_disconnect, upload, receive, group.cancel_scope)
            await self._relay(request, send, chat, upload, tags)
            group.cancel_scope.cancel()

    async def _relay(
        self,
        request: httpx2.Request,
        send: Send,
        chat: bool,
        upload: _Upload,
        tags: dict[str, str],
    ) -> None:
        started_at, started = datetime.now(UTC), time.perf_counter()
        try:
            response = await self._transport.handle_async_request(request)
        except _ClientGone:
            return
        except httpx2.HTTPError as exc:
            await _bad_gateway(send, exc)
            return
        exchange = None
        if chat:
            # read now: the request body is sent by the time its answer starts
            sent = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
            info = replace(
                RequestInfo.of(str(request.url), upload.kept, tags, sent),
                started_at=started_at,
                started=started,
            )
            exchange = Exchange(self._recorder, info, response.status_code, response.headers)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": end_to_end(response.headers.raw),
                }
            )
            async for raw in response.aiter_raw():
                if exchange is not None:
                    exchange.feed(raw)
                await send({"type": "http.response.body", "body": raw, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx2.HTTPError as exc:
            # Cut mid-answer: the client's answer is cut too (uvicorn closes the connection).
            logger.warning(
                "fpmon proxy: the upstream broke off %s: %s",
                clean(request.url.path),
                clean(redact(str(exc))),
            )
        finally:
            if exchange is not None:
                exchange.finish()
            with anyio.CancelScope(shield=True):  # a cut stream still frees its connection
                await response.aclose()


async def _watch_disconnect(upload: _Upload, receive: Receive, relay: anyio.CancelScope) -> None:
    await upload.done.wait()
    if (await receive())["type"] == "http.disconnect":
        relay.cancel()


async def _bad_gateway(send: Send, exc: httpx2.HTTPError) -> None:
    """The upstream could not be reached."""
    message = redact(f"fpmon proxy: the upstream could not be reached: {type(exc).__name__}: {exc}")
    await _error_answer(send, 502, message)


async def _not_a_path(send: Send) -> None:
    """A request target that is not a path under the upstream: a request meant for another
    host (or made to reach one), refused before anything is sent anywhere. The target itself
    is not logged: it may hold a key."""
    await _error_answer(
        send,
        400,
        "fpmon proxy: refused a request whose target is not a path under the upstream: send "
        "requests to the proxy as to the API itself, e.g. POST /v1/chat/completions",
    )


async def _error_answer(send: Send, status: int, message: str) -> None:
    """An answer in the API's own error shape, and the same line in the proxy's log."""
    logger.warning("%s", message)
    error = {"message": message, "type": "fpmon_proxy_error", "param": None, "code": None}
    body = json.dumps({"error": error}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _RequestTargetProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol, also handing the application the request target as it came
    (see REQUEST_TARGET): uvicorn passes on only the path it parsed out of it, and for an
    absolute-form target (`POST http://elsewhere/x`) that would hide a request meant for
    another host."""

    def on_headers_complete(self) -> None:
        self.scope["extensions"] = {REQUEST_TARGET: {"raw": bytes(self.url)}}
        super().on_headers_complete()


class _CutAtShutdown(logging.Filter):
    """uvicorn logs an error and a traceback per stream when its graceful shutdown cuts the
    streams still open after GRACE_SECONDS: one warning instead, since that is how the proxy is
    meant to stop. Only after uvicorn said it cuts them: any other traceback still shows."""

    def __init__(self) -> None:
        super().__init__()
        self._cutting = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self._cutting and record.exc_info:
            return not isinstance(record.exc_info[1], asyncio.CancelledError)
        cut = re.fullmatch(
            r"Cancel (\d+) running task\(s\), timeout graceful shutdown exceeded",
            record.getMessage(),
        )
        if cut:
            self._cutting = True
            logger.warning(
                "fpmon proxy: %s stream(s) still open %g s after the signal to stop were cut",
                cut[1],
                GRACE_SECONDS,
            )
            return False
        return True


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # serve_proxy handles the signals: from before it says it is ready (a SIGTERM right
        # after that line must still stop it gracefully), and so that a proxy told to stop
        # exits 0, where uvicorn would re-raise the signal once it has shut down.
        yield


def parse_listen(listen: str) -> tuple[str, int]:
    """`127.0.0.1:8787`, `[::1]:8787` or `localhost:0` -> (host, port)."""
    host, colon, port = listen.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen {listen!r}: expected HOST:PORT, like 127.0.0.1:8787")
    return host, int(port)


def check_upstream(upstream: str) -> None:
    parts = urlsplit(upstream)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"--upstream {upstream!r}: expected an http:// or https:// URL, like "
            "https://api.x.ai/v1"
        )
    if "@" in parts.netloc:
        # It would be stored with every record (their base_url); the application's own
        # request carries its credentials.
        raise ConfigError(
            f"--upstream {shown_upstream(upstream)}: a user name or password in the URL is "
            "refused, since it would be stored in the history: remove the user:password@ part "
            "and let the application send its key"
        )


def shown_upstream(upstream: str) -> str:
    """The upstream URL as printed: credentials in it (user:password@, a query string such as
    ?api-key=) are left out."""
    parts = urlsplit(upstream)
    host = parts.netloc.rpartition("@")[2]
    userinfo = "***@" if "@" in parts.netloc else ""
    query = "?***" if parts.query else ""
    return clean(redact(f"{parts.scheme}://{userinfo}{host}{parts.path}{query}"))


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is served so that a port in use is a
    configuration error (exit 2), not a crash."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"--listen {host}:{port}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(1024)  # connections made before uvicorn runs wait in the backlog
    except OSError as exc:
        sock.close()
        raise ConfigError(f"--listen {host}:{port}: cannot listen there: {exc.strerror}") from None
    return sock


def serve_proxy(
    *,
    listen: str,
    upstream: str,
    target: str,
    history: str | None,
    config: Path | None,
    on_ready: Callable[[str, Recorder], None],
) -> None:
    """Serve until SIGTERM or Ctrl-C, then give open streams GRACE_SECONDS to finish."""
    host, port = parse_listen(listen)
    recorder = Recorder(target, history=history, config=config)
    check_upstream(upstream)
    sock = bind(host, port)
    app = ProxyApp(upstream, recorder)
    serve_app(app, sock, host=host, on_ready=lambda url: on_ready(url, recorder))


def serve_app(app: Any, sock: socket.socket, *, host: str, on_ready: Callable[[str], None]) -> None:
    """Serve an ASGI app on a socket from `bind(host, ...)` until SIGTERM or Ctrl-C, then give
    open streams GRACE_SECONDS to finish; `on_ready` gets the URL once the signals are handled.
    `fpmon proxy` and `fpmon otlp` both run this way."""
    server = _Server(
        uvicorn.Config(
            app,
            # Every request's raw target reaches the app (the proxy refuses all but a path).
            http=_RequestTargetProtocol,
            lifespan="on",
            log_level="warning",
            access_log=False,  # a request line can carry a key in its query string
            server_header=False,  # the upstream's own headers pass unchanged
            date_header=False,
            timeout_graceful_shutdown=int(GRACE_SECONDS),
            # Longer than the idle time of clients' pools (httpx: 5 s, like uvicorn's default):
            # the client closes an idle connection first, so that it never sends a request on
            # one the proxy is closing.
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
    )

    def stop(signum: int, frame: FrameType | None) -> None:
        if server.should_exit and signum == signal.SIGINT:
            server.force_exit = True  # a second Ctrl-C: do not wait for the streams
        server.should_exit = True

    cut_at_shutdown = _CutAtShutdown()
    logging.getLogger("uvicorn.error").addFilter(cut_at_shutdown)
    try:
        with on_stop(stop):
            shown = f"[{host}]" if ":" in host else host
            on_ready(f"http://{shown}:{sock.getsockname()[1]}")
            server.run(sockets=[sock])  # uvloop and httptools: uvicorn picks them up
    finally:
        logging.getLogger("uvicorn.error").removeFilter(cut_at_shutdown)
