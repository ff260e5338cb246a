"""Your own traffic: record the fingerprint of every chat completion an application receives,
and check it the moment it arrives.

    client = OpenAI(http_client=fp_monitor.recording_client("grok"))

`recording_client` returns an httpx2 client whose transport delegates to httpx2's own and
watches each chat-completions response go by: the bytes reach the caller as they arrive, a
stream is parsed line by line as it passes (memory stays bounded however long it runs), and when
the response ends (or is closed) it becomes one record in the history, with source `traffic`.

Each recorded response is its own small check: the same detection as `fpmon check` (known set,
lock entry, `expect`, learning) with one sample, so a value first seen in traffic gets the
status `new` and a `checks` row like a probe's, and joins the known set. Detection reads the
target's settings from the fpmon configuration when one is found; without one, the defaults.

Records are written by a background thread, in batches, so that the application never waits
on the history; closing the client (or `client.fpmon.flush()`) waits until they are written,
and so does the end of the program. Recording never breaks the application's request: any
failure to record (a read-only history, a broken lock file, a bug) is logged on the
`fp_monitor.traffic.recording` logger and counted in `client.fpmon.errors`. Request and response
headers are not stored (only a target's `track_headers`): the Authorization header and the
API key cannot end up in the history or a log.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import json
import logging
import os
import queue
import re
import sys
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread
import httpx2

# httpx2's decoders are the ones behind the Accept-Encoding it sends: whatever the caller can
# read, the recorder can read too.
from httpx2._decoders import SUPPORTED_DECODERS, ContentDecoder, MultiDecoder

from fp_monitor.check import ResponseDetection
from fp_monitor.config.history_url import HistoryLocation
from fp_monitor.config.providers import provider_for_url
from fp_monitor.config.settings import carries_credentials, load_config
from fp_monitor.config.site import machine_site
from fp_monitor.domain.errors import ConfigError, HistoryError, UnexpectedFingerprint
from fp_monitor.domain.learning import LearningSettings
from fp_monitor.domain.models import (
    NULL,
    ErrorKind,
    LockEntry,
    Observation,
    Source,
    TargetResult,
)
from fp_monitor.domain.streams import DISAGREEMENT_TAG, StreamFields
from fp_monitor.domain.text import shorten
from fp_monitor.net.redact import redact, scrub
from fp_monitor.net.untrusted import noting_escapes, parse_json
from fp_monitor.notify.dispatch import deliver
from fp_monitor.notify.events import Notification, traffic_events
from fp_monitor.probe.request import (
    MAX_BODY_BYTES,
    completion_fields,
    error_message,
    parse_completion,
    request_id,
    status_error_kind,
)
from fp_monitor.store.history import History
from fp_monitor.store.lockfile import read_lock
from fp_monitor.store.recording import PendingCheck

logger = logging.getLogger(__name__)

OnUnexpected = Literal["warn", "raise"]
TAGS_HEADER = "x-fpmon-tags"
"""Request header with the tags of one response's record: `user=u-42,team=search`. It is
removed before the request leaves (the provider never sees it)."""
MAX_EVENT_BYTES = 1024 * 1024
"""A server-sent event larger than this is skipped rather than held in memory."""
_USAGE_OR_ERROR = re.compile(rb'"usage"\s*:\s*\{|"error"\s*:')
# A fingerprint key and its JSON value (a string or a literal) in a chunk's bytes. A key cannot
# be forged from inside a string (its quotes would be escaped); a match in a nested object is
# only a reason to parse the chunk.
_FINGERPRINT_KEY = b'"system_fingerprint"'
_FINGERPRINT_VALUE = re.compile(rb'"system_fingerprint"\s*:\s*("(?:[^"\\]|\\.)*"|[a-z]+)')
_KNOWN_RAW_LIMIT = 8
_CHUNK_KEYS = frozenset({"id", "object", "model", "system_fingerprint", "usage"})
_WRITE_BATCH = 500
_WRITER_IDLE_SECONDS = 5.0
_T = TypeVar("_T")
# Recorders whose writer thread may hold records: written at exit (the threads are daemons, so
# that an unclosed client never keeps a program from ending).
_RECORDERS: weakref.WeakSet[Recorder] = weakref.WeakSet()


@atexit.register
def _write_at_exit() -> None:
    for recorder in list(_RECORDERS):
        recorder.flush()


class UnexpectedFingerprintWarning(UserWarning):
    """`on_unexpected="warn"`: a response came from a backend outside the expected set."""


# Between the application's line and the judge: fpmon, the HTTP client and its transport, the
# SDK, and the event loop of an async client. A warning points past them all.
_BETWEEN = frozenset(
    {"fp_monitor", "httpx2", "httpx", "httpcore", "h11", "h2", "openai", "anyio", "asyncio"}
)


def warn_caller(unexpected: UnexpectedFingerprint | None) -> None:
    """Warn of `unexpected` (if any) at the application's line that made the request or reads
    the stream: Python shows a warning once per place, so that place must be the caller's, not
    one line of fpmon for every call site."""
    if unexpected is None:
        return
    frame = sys._getframe(1)  # this function's caller is stacklevel 2
    level = 2
    while frame.f_back is not None and (
        frame.f_globals.get("__name__", "").partition(".")[0] in _BETWEEN
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(str(unexpected), UnexpectedFingerprintWarning, stacklevel=level)


def parse_tags(header: str) -> dict[str, str]:
    """`user=u-42,team=search` -> {"user": "u-42", "team": "search"}. Percent-escapes let a
    value hold a comma or an equals sign; an item without `=` is ignored."""
    tags = {}
    for item in header.split(","):
        key, equals, value = item.partition("=")
        if equals and key.strip():
            tags[unquote(key.strip())] = unquote(value.strip())
    return tags


def is_chat_completion(method: str, path: str) -> bool:
    return method.upper() == "POST" and path.rstrip("/").endswith("/chat/completions")


@dataclass(frozen=True)
class RequestInfo:
    """What a record needs from the application's request (never its headers or messages)."""

    url: str
    requested_model: str
    """The body's `model`; empty when the body could not be read (e.g. too large to peek at)."""
    shape: str
    """Hash of the path and the parameter names sent: which kind of request it was."""
    tags: Mapping[str, str]
    started_at: datetime
    started: float
    """time.perf_counter() when the request left."""
    secrets: tuple[str, ...] = field(default=(), repr=False)
    """The request's credentials, only to hide them from a stored error message (a server
    may echo a key that has no provider's shape); never stored themselves."""

    @classmethod
    def of(
        cls,
        url: str,
        body: bytes | None,
        tags: Mapping[str, str],
        headers: Iterable[tuple[str, str]] = (),
    ) -> RequestInfo:
        try:
            data: Any = parse_json(body) if body else None
        except (ValueError, RecursionError):
            data = None
        params = data if isinstance(data, dict) else {}
        model = params.get("model")
        shape = {"source": "traffic", "path": urlsplit(url).path, "params": sorted(params)}
        canonical = json.dumps(shape, sort_keys=True, separators=(",", ":"))
        return cls(
            url=url,
            requested_model=model if isinstance(model, str) else "",
            shape=hashlib.sha256(canonical.encode()).hexdigest()[:16],
            tags=dict(tags),
            started_at=datetime.now(UTC),
            started=time.perf_counter(),
            secrets=_credentials(headers),
        )


def _credentials(headers: Iterable[tuple[str, str]]) -> tuple[str, ...]:
    """The values of the request's credential headers, and of a bearer token the token
    alone."""
    found = []
    for name, value in headers:
        if carries_credentials(name) and value.strip():
            found.append(value.strip())
            scheme, _, token = value.strip().partition(" ")
            if token.strip() and scheme.lower() == "bearer":
                found.append(token.strip())
    return tuple(found)


class ResponseTap:
    """Reads one chat-completions response as its bytes pass, keeping only what the record
    needs: a JSON body (bounded, like the probe's), or for a stream the line being read, the
    event being gathered and the stream's fields so far (see `domain.streams` for which chunk's
    fingerprint, model and id count)."""

    def __init__(self, headers: httpx2.Headers) -> None:
        self.streaming = headers.get("content-type", "").lower().startswith("text/event-stream")
        self._problem: str | None = None
        self._decoder: ContentDecoder | None = _decoder(headers)
        if self._decoder is None:
            encoding = headers.get("content-encoding", "")
            self._problem = f"content-encoding {encoding!r} cannot be decoded by fpmon"
        self._body = bytearray()
        self._line = bytearray()
        self._skipping = False
        self._event: list[bytes] = []
        self._event_size = 0
        self._stream = StreamFields()
        self._known_raw: set[bytes] = set()
        self._stream_error: str | None = None
        self._done = False

    @property
    def body(self) -> bytes:
        return bytes(self._body)

    @property
    def decided(self) -> bool:
        """The stream showed what the backend is: chunks carried a real fingerprint and a real
        model, or the stream's `[DONE]` came without (its state is then known)."""
        return self._stream.complete or (self._done and self._stream.chunks > 0)

    @property
    def fields(self) -> dict[str, Any] | None:
        """The stream's fields so far; None before its first chunk."""
        return self._stream.fields() if self._stream.chunks else None

    @property
    def disagreeing(self) -> tuple[str, ...]:
        """Fingerprints that chunks carried after the recorded one (see `domain.streams`)."""
        return self._stream.disagreeing

    def feed(self, raw: bytes) -> bool:
        """The next raw bytes of the body; True when they decided the stream first (see
        `decided`)."""
        decided = self.decided
        for data in self._decode(raw):
            self._take(data)
        return self.decided and not decided

    def finish(self) -> dict[str, Any] | str:
        """The Observation fields of the whole response, or why there are none."""
        for data in self._flush():
            self._take(data)
        if self._problem is not None:
            return self._problem
        if not self.streaming:
            return parse_completion(bytes(self._body))
        if not self._skipping:
            self._line_done(bytes(self._line))
        self._line_done(b"")  # a stream cut before its blank line still ends its event
        if not self._stream.chunks:
            return self._stream_error or "the stream ended before any chat-completion chunk"
        return self._stream.fields()

    def _take(self, data: bytes) -> None:
        """Decoded bytes: a stream's are parsed as they come, a JSON body's kept (bounded)."""
        if self.streaming:
            self._lines(data)
        elif len(self._body) + len(data) > MAX_BODY_BYTES:
            self._problem = f"response body larger than {MAX_BODY_BYTES // 2**20} MiB"
            self._body.clear()
            self._decoder = None
        else:
            self._body += data

    def _decode(self, raw: bytes) -> Iterable[bytes]:
        if self._decoder is None:
            return ()
        try:
            return list(self._decoder.decode(raw))
        except httpx2.DecodingError as exc:
            self._problem = f"the body could not be decoded: {exc}"
            self._decoder = None
            return ()

    def _flush(self) -> Iterable[bytes]:
        decoder, self._decoder = self._decoder, None
        if decoder is None:
            return ()
        try:
            return list(decoder.flush())
        except httpx2.DecodingError as exc:
            self._problem = f"the body could not be decoded: {exc}"
            return ()

    def _lines(self, data: bytes) -> None:
        *complete, rest = data.split(b"\n")
        for piece in complete:
            if self._skipping:
                self._skipping = False  # the end of an oversized line: skipped, not kept
            else:
                self._line_done(bytes(self._line + piece))
            self._line.clear()
        if self._skipping:
            return
        if len(self._line) + len(rest) > MAX_EVENT_BYTES:
            self._line.clear()
            self._skipping = True
        else:
            self._line += rest

    def _line_done(self, line: bytes) -> None:
        line = line.removesuffix(b"\r")
        if not line:
            if self._event:
                self._event_done(b"\n".join(self._event))
            self._event.clear()
            self._event_size = 0
        elif line.startswith(b"data:"):
            value = line[5:].removeprefix(b" ")
            self._event_size += len(value)
            if self._event_size <= MAX_EVENT_BYTES:
                self._event.append(value)
            else:
                self._event.clear()
        # event:, id:, retry: and comments carry nothing a record needs

    def _event_done(self, data: bytes) -> None:
        if data == b"[DONE]":
            self._done = True
            return
        if not self._news(data):
            return
        try:
            chunk: Any = parse_json(data)
        except (ValueError, RecursionError):
            return
        fields = _chunk_fields(chunk)
        if isinstance(fields, str):
            if isinstance(chunk, dict) and "error" in chunk:
                self._stream_error = f"error event in the stream: {error_message(data)}"
            return
        self._stream.take(fields)

    def _news(self, data: bytes) -> bool:
        """Whether an event may change the record, judged from its bytes: most of a long stream
        is tokens, which are not parsed at all. The first chunk is news; after it, a usage
        object, an error, a model or id still missing, or a fingerprint that would change the
        stream's (only its value is decoded to tell)."""
        stream = self._stream
        if not stream.chunks or stream.needs_model_or_id or _USAGE_OR_ERROR.search(data):
            return True
        start = data.find(_FINGERPRINT_KEY)  # a plain search first: most chunks have one key
        while start != -1:
            match = _FINGERPRINT_VALUE.match(data, start)
            if match is None:
                return True
            start = data.find(_FINGERPRINT_KEY, match.end())
            raw = match[1]
            if raw in self._known_raw:
                continue
            try:
                value = parse_json(raw)
            except (ValueError, RecursionError):
                return True
            if not isinstance(value, str | None) or not stream.is_known(
                NULL if value is None else value
            ):
                return True
            # Once known, a value stays known (the stream's fields only grow): the next chunks
            # with the same bytes are passed over without decoding them.
            if len(self._known_raw) < _KNOWN_RAW_LIMIT:
                self._known_raw.add(raw)
        return False


def _chunk_fields(chunk: Any) -> dict[str, Any] | str:
    """The fields of one stream chunk, or why it is not one. A chunk without a choices list is
    still one when it has a chunk's fields (a trailing usage chunk, a gateway's metadata
    chunk): its fingerprint and model count like any other's (see `domain.streams`)."""
    if (
        isinstance(chunk, dict)
        and "choices" not in chunk
        and "error" not in chunk
        and not _CHUNK_KEYS.isdisjoint(chunk)
    ):
        chunk = {**chunk, "choices": []}
    return completion_fields(chunk)


def _decoder(headers: httpx2.Headers) -> ContentDecoder | None:
    """A decoder for the response's content-encoding; None when fpmon cannot read it."""
    codings = [c.strip().lower() for c in headers.get_list("content-encoding", split_commas=True)]
    codings = [c for c in codings if c and c != "identity"]
    if any(c not in SUPPORTED_DECODERS for c in codings):
        return None
    return MultiDecoder(codings)


class _Connection:
    """One history connection, opened on first use, and the lock of the threads that take
    turns on it; after a failure it is closed, so that the next use opens it afresh."""

    def __init__(self, path: HistoryLocation) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._history: History | None = None

    def run(self, work: Callable[[History], _T]) -> _T:
        with self._lock:
            try:
                if self._history is None:
                    self._history = History.open(self._path, any_thread=True)
                return work(self._history)
            except BaseException:
                self._close()
                raise

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._history is not None:
            self._history.close()
            self._history = None


class Recorder:
    """One target's recording: its detection settings, a writer thread with its own history
    connection, another connection for checking responses as they arrive (so that a check
    never waits behind a write), and the counts of what was recorded or failed."""

    def __init__(
        self,
        target: str,
        *,
        history: str | PathLike[str] | None = None,
        tags: Mapping[str, str] | None = None,
        on_unexpected: OnUnexpected | None = None,
        config: Path | None = None,
    ) -> None:
        if on_unexpected not in (None, "warn", "raise"):
            raise ValueError(
                f"on_unexpected must be 'warn', 'raise' or None, not {on_unexpected!r}"
            )
        if not isinstance(target, str) or not target:
            raise ValueError("target must be a non-empty name, e.g. 'grok'")
        loaded = load_config(
            config, history=None if history is None else os.fspath(history), require_targets=False
        )
        settings = next((t for t in loaded.targets if t.name == target), None)
        self.target = target
        self.tags = {str(k): str(v) for k, v in (tags or {}).items()}
        self.on_unexpected = on_unexpected
        self.history_path = loaded.history
        self.track_headers = settings.track_headers if settings else ()
        self._baseline = loaded.baseline
        self._config = loaded  # its notifiers hear of a value first seen in this traffic
        self._learning = settings.learning if settings else LearningSettings()
        self._expect = settings.expect if settings else frozenset()
        self._remind = settings.remind if settings else None
        # The site of the machine that records (the target's, when the config names it).
        self.site = settings.site if settings else machine_site()
        self._writing = _Connection(self.history_path)
        self._checking = _Connection(self.history_path)
        self._counts_lock = threading.Lock()
        self._writer_lock = threading.Lock()
        self._writer: threading.Thread | None = None
        self._queue: queue.Queue[Observation | None] = queue.Queue()
        _RECORDERS.add(self)
        self.recorded = 0
        """Responses recorded."""
        self.errors = 0
        """Responses whose recording (or check) failed: logged, never raised."""

    def tags_with(self, header: str | None) -> dict[str, str]:
        """The tags of one response: the recorder's, overridden by its X-Fpmon-Tags header."""
        return {**self.tags, **(parse_tags(header) if header else {})}

    def judge(self, observation: Observation) -> UnexpectedFingerprint | None:
        """Raise (`on_unexpected="raise"`) when the response's backend is unexpected: a value
        that detection calls `new` (outside the lock entry and `expect`, or, without a lock
        entry, outside everything recorded for the target once learning is over). With "warn",
        return it instead, for `warn_caller` on the application's own thread (an async client
        judges in a worker thread, whose stack does not hold the application's line).

        A response is judged before its own record is queued: the writer thread, once it has
        the record, may make the value known at any moment, and the judge would then miss it."""
        if self.on_unexpected is None or not observation.ok:
            return None
        result = self._guarded(
            "check",
            self._checking,
            lambda history: self._detection(self._lock_entry())(
                observation, history.facts(self.target, kind=Source.TRAFFIC)
            ),
        )
        if result is None or not result.unexpected:
            return None
        unexpected = _unexpected(self.target, observation, result)
        if self.on_unexpected == "raise":
            raise unexpected
        return unexpected

    def record(self, observation: Observation) -> None:
        """Hand one response to the writer thread: the application never waits on the history
        (a busy or broken one included). `flush()` writes what is still queued."""
        if observation.site != self.site:  # a copy per response otherwise (fpmon otlp's)
            observation = replace(observation, site=self.site)
        with self._writer_lock:
            if self._writer is None:
                # Each writer its own queue: the end-of-queue mark that flush() gives one
                # writer can never be taken by the next.
                self._queue = queue.Queue()
                self._writer = threading.Thread(
                    target=self._write_queued,
                    args=(self._queue,),
                    name="fpmon-recorder",
                    daemon=True,
                )
                self._writer.start()
            self._queue.put(observation)

    def flush(self) -> None:
        """Write what is queued and let go of the history file (the next response opens it
        again). Closing the client does it."""
        with self._writer_lock:
            writer, self._writer = self._writer, None
            if writer is not None:
                self._queue.put(None)
        if writer is not None:
            writer.join()
        self._writing.close()
        self._checking.close()

    def _write_queued(self, pending: queue.Queue[Observation | None]) -> None:
        """The writer thread: what queued up meanwhile goes in one transaction; idle for a
        while, the thread ends (the next response starts another); None marks the end."""
        while True:
            try:
                batch = [pending.get(timeout=_WRITER_IDLE_SECONDS)]
            except queue.Empty:
                with self._writer_lock:
                    if pending.empty():  # under the lock, so no record() is putting one
                        self._writer = None
                        return
                continue
            while len(batch) < _WRITE_BATCH and not pending.empty():
                batch.append(pending.get_nowait())
            observations = [o for o in batch if o is not None]
            if observations:
                self._write_batch(observations)
            if None in batch:
                return

    def _write_batch(self, observations: list[Observation]) -> None:
        """The batch in one transaction. When that fails for another reason than the history
        itself, each record is written alone, so that one which cannot be stored (or runs into
        a bug) costs only its own record; a history that cannot be written (locked, read-only,
        damaged) would fail each one alike, after the busy timeout, so the batch fails whole."""
        try:
            self._commit(observations)
        except HistoryError as exc:
            self._failed("record", exc, len(observations))
        except Exception:
            for observation in observations:
                try:
                    self._commit([observation])
                except Exception as exc:  # a bug too: the writer thread must go on
                    self._failed("record", exc, 1)

    def _commit(self, observations: list[Observation]) -> None:
        news = self._writing.run(functools.partial(self._write, observations=observations))
        with self._counts_lock:
            self.recorded += len(observations)
        self._notify(news)  # once committed, like a probe's check

    def _write(self, history: History, observations: list[Observation]) -> list[Notification]:
        """Each response its own small check, all in one transaction; the events among them
        to notify (`new`, `learned`: see TRAFFIC_STATUSES). The facts are read once: each
        response is detected against those the ones before it left (see running_facts)."""
        detection = self._detection(self._lock_entry())  # the lock read once for the batch
        news = []
        checks = []
        with history.write():
            running = history.running_facts(self.target, Source.TRAFFIC)
            check_ids = _check_ids(len(observations))
            for observation, check_id in zip(observations, check_ids, strict=True):
                result = detection(observation, running.facts)
                at = observation.observed_at
                checks.append(PendingCheck(check_id, at, result, (observation,)))
                news += traffic_events(result, check_id, at, history.path, self.site)
                running = running.after(result, [observation], at)
            history.append_checks(checks, Source.TRAFFIC)
        return news

    def _notify(self, news: list[Notification]) -> None:
        """Send the events (see traffic_events) through the configuration's notifiers, from the
        writer thread (records wait meanwhile, the application does not)."""
        if not news or not self._config.notifiers:
            return
        try:
            failures = deliver(self._config, news)
        except Exception as exc:  # a bug too: the writer thread must go on
            failures = [redact(f"{type(exc).__name__}: {exc}")]
        for failure in failures:
            logger.warning("fpmon: a notification of target %s failed: %s", self.target, failure)

    def _lock_entry(self) -> LockEntry | None:
        """Read at each use: `fpmon accept` may change the lock while the application runs."""
        return read_lock(self._baseline).get(self.target)

    def _detection(self, entry: LockEntry | None) -> ResponseDetection:
        return ResponseDetection(
            self.target,
            settings=self._learning,
            expect=self._expect,
            entry=entry,
            remind=self._remind,
            grammars=self._config.grammars,
        )

    def _guarded(
        self,
        what: str,
        connection: _Connection,
        work: Callable[[History], _T],
        responses: int = 1,
    ) -> _T | None:
        """`work` on the history, or None: a failure is logged and counted (for each of the
        `responses`), never raised, because the application's request matters more than its
        record."""
        try:
            return connection.run(work)
        except Exception as exc:  # a bug too: the application's call must go on
            self._failed(what, exc, responses)
            return None

    def _failed(self, what: str, exc: Exception, responses: int) -> None:
        with self._counts_lock:
            self.errors += responses
        logger.warning(
            "fpmon: could not %s %s of target %s: %s",
            what,
            "a response" if responses == 1 else f"{responses} responses",
            self.target,
            redact(f"{type(exc).__name__}: {exc}"),
        )


def _check_ids(count: int) -> list[str]:
    """`count` check ids as uuid.uuid4().hex gives them, from one read of the system's random
    source instead of one per recorded response."""
    random = os.urandom(16 * count)
    return [uuid.UUID(bytes=random[i : i + 16], version=4).hex for i in range(0, len(random), 16)]


def _unexpected(
    target: str, observation: Observation, result: TargetResult
) -> UnexpectedFingerprint:
    fingerprint = observation.fingerprint or ""
    if fingerprint not in result.known:
        return UnexpectedFingerprint(target, "fingerprint", result.known, fingerprint)
    return UnexpectedFingerprint(
        target, "model", result.known_models, observation.resolved_model or ""
    )


class Exchange:
    """One chat-completions response on its way to the caller, from its status line to its
    record."""

    def __init__(
        self, recorder: Recorder, request: RequestInfo, status: int, headers: httpx2.Headers
    ) -> None:
        self.recorder = recorder
        self._request = request
        self._status = status
        self._headers = headers
        self._tap = ResponseTap(headers)
        self._finished = False

    @property
    def streaming(self) -> bool:
        return self._tap.streaming

    def feed(self, raw: bytes) -> Observation | None:
        """Watch the next raw bytes; the response so far when they decided the stream's backend
        (the moment to judge it, before the caller reads what follows: the chunk by which the
        stream had shown a real fingerprint and model, or the `[DONE]` of a stream that showed
        none)."""
        if self._tap.feed(raw) and self._tap.fields is not None:
            return self._observation(self._tap.fields)
        return None

    def conclude(self) -> Observation | None:
        """The whole response, not yet recorded; None after the first call: one response is
        one record, whichever of end-of-stream and close comes first."""
        if self._finished:
            return None
        self._finished = True
        return self._observation(self._tap.finish())

    def finish(self) -> None:
        """Record the whole response (queued), unless it was concluded already."""
        if (observation := self.conclude()) is not None:
            self.recorder.record(observation)

    @contextmanager
    def ending(self) -> Iterator[Observation | None]:
        """The end of the body. A JSON answer is given, to be judged whole before the caller
        gets it, and is recorded only after that (see Recorder.judge); so is a stream that
        ended without deciding (no real fingerprint and model, and no `[DONE]`), while one
        judged as it went gives None. The response is recorded on leaving, however judging
        ends."""
        observation = self.conclude()
        try:
            yield None if self.streaming and self._tap.decided else observation
        finally:
            if observation is not None:
                self.recorder.record(observation)

    def _observation(self, fields: dict[str, Any] | str) -> Observation:
        request = self._request
        url = request.url.split("?", 1)[0]
        common: dict[str, Any] = {
            "target": self.recorder.target,
            "provider": provider_for_url(url),
            "base_url": url.rstrip("/").removesuffix("/chat/completions"),
            "requested_model": request.requested_model,
            "observed_at": request.started_at,
            "attempts": 1,
            "latency_ms": (time.perf_counter() - request.started) * 1000,
            "request_shape": request.shape,
            "http_status": self._status,
            "request_id": request_id(self._headers),
            "headers": {
                h: self._headers[h] for h in self.recorder.track_headers if h in self._headers
            },
            "tags": request.tags,
        }
        kind = status_error_kind(self._status)
        outcome: dict[str, Any]
        if kind is not None:
            message = f"HTTP {self._status}: {error_message(self._tap.body)}"
            outcome = {"error_kind": kind, "error_message": message}
        elif isinstance(fields, str):
            outcome = {"error_kind": ErrorKind.BAD_RESPONSE, "error_message": fields}
        else:
            outcome = fields
            if self._tap.disagreeing:
                common["tags"] = {**request.tags, DISAGREEMENT_TAG: self._disagreement()}
        return noting_escapes(scrub(Observation(**common, **outcome), request.secrets))

    def _disagreement(self) -> str:
        """The tag's value: the later fingerprints as a JSON list (a value may hold a comma),
        redacted like every server string of the record, each cut to a table cell's length."""
        secrets = self._request.secrets
        values = [shorten(redact(value, secrets)) for value in self._tap.disagreeing]
        return json.dumps(values, ensure_ascii=False)


def _request_info(recorder: Recorder, request: httpx2.Request) -> RequestInfo:
    """The request's facts; its tags header is taken off here, before it leaves."""
    header = request.headers.pop(TAGS_HEADER, None)
    try:
        body: bytes | None = request.content
    except httpx2.RequestNotRead:
        body = None  # a streamed upload: not read here, so it is sent unchanged
    tags = recorder.tags_with(header)
    return RequestInfo.of(str(request.url), body, tags, request.headers.items())


class _RecordingStream(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, exchange: Exchange) -> None:
        self._inner = inner
        self._exchange = exchange

    def __iter__(self) -> Iterator[bytes]:
        exchange = self._exchange
        recorder = exchange.recorder
        try:
            for raw in self._inner:
                if (shown := exchange.feed(raw)) is not None:
                    warn_caller(recorder.judge(shown))  # before a byte of it reaches the caller
                yield raw
        except BaseException:
            exchange.finish()
            raise
        with exchange.ending() as answer:
            if answer is not None:
                warn_caller(recorder.judge(answer))

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._exchange.finish()


class _AsyncRecordingStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, exchange: Exchange) -> None:
        self._inner = inner
        self._exchange = exchange

    async def __aiter__(self) -> AsyncIterator[bytes]:
        exchange = self._exchange
        recorder = exchange.recorder
        try:
            async for raw in self._inner:
                if (shown := exchange.feed(raw)) is not None:
                    warn_caller(await anyio.to_thread.run_sync(recorder.judge, shown))
                yield raw
        except BaseException:
            exchange.finish()
            raise
        with exchange.ending() as answer:
            if answer is not None:
                warn_caller(await anyio.to_thread.run_sync(recorder.judge, answer))

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            self._exchange.finish()


class RecordingTransport(httpx2.BaseTransport):
    """Delegates to another transport; chat-completions responses are watched and recorded."""

    def __init__(self, inner: httpx2.BaseTransport, recorder: Recorder) -> None:
        self._inner = inner
        self._recorder = recorder

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if not is_chat_completion(request.method, request.url.path):
            return self._inner.handle_request(request)
        info = _request_info(self._recorder, request)
        response = self._inner.handle_request(request)
        assert isinstance(response.stream, httpx2.SyncByteStream)
        exchange = Exchange(self._recorder, info, response.status_code, response.headers)
        response.stream = _RecordingStream(response.stream, exchange)
        return response

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            self._recorder.flush()


class AsyncRecordingTransport(httpx2.AsyncBaseTransport):
    """The async twin of RecordingTransport; history work runs in a worker thread."""

    def __init__(self, inner: httpx2.AsyncBaseTransport, recorder: Recorder) -> None:
        self._inner = inner
        self._recorder = recorder

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if not is_chat_completion(request.method, request.url.path):
            return await self._inner.handle_async_request(request)
        info = _request_info(self._recorder, request)
        response = await self._inner.handle_async_request(request)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        exchange = Exchange(self._recorder, info, response.status_code, response.headers)
        response.stream = _AsyncRecordingStream(response.stream, exchange)
        return response

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            await anyio.to_thread.run_sync(self._recorder.flush)  # writes what is queued


class RecordingClient(httpx2.Client):
    """An httpx2.Client that records the chat completions it receives; `fpmon` is its
    Recorder (`fpmon.recorded`, `fpmon.errors`)."""

    def __init__(self, recorder: Recorder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fpmon = recorder


class RecordingAsyncClient(httpx2.AsyncClient):
    """An httpx2.AsyncClient that records the chat completions it receives; `fpmon` is its
    Recorder (`fpmon.recorded`, `fpmon.errors`)."""

    def __init__(self, recorder: Recorder, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fpmon = recorder


# The client options that configure its connection pool, and so belong to the transport that
# the recorder wraps (given to the client with a transport, httpx2 would ignore them).
_TRANSPORT_OPTIONS = ("verify", "cert", "http1", "http2", "limits", "proxy")


def _split_options(options: dict[str, Any]) -> dict[str, Any]:
    pool = {key: options.pop(key) for key in _TRANSPORT_OPTIONS if key in options}
    if "trust_env" in options:
        pool["trust_env"] = options["trust_env"]
    return pool


def recording_client(
    target: str,
    *,
    history: str | PathLike[str] | None = None,
    tags: Mapping[str, str] | None = None,
    on_unexpected: OnUnexpected | None = None,
    **httpx_kwargs: Any,
) -> RecordingClient:
    """An httpx2.Client for `OpenAI(http_client=...)` that records every chat-completions
    response into the history (default: $FPMON_HISTORY, the config's `history`, the user data
    dir) under `target`, with `tags` (per request: the X-Fpmon-Tags header). `on_unexpected`:
    "warn" or "raise" UnexpectedFingerprint when a response comes from an unexpected backend
    (a stream: at the chunk that shows its fingerprint). Other keywords go to httpx2.Client;
    `transport=` is wrapped, not replaced. Environment proxy variables are not read: pass
    `proxy=`. A configuration file that is found but invalid raises ConfigError here, never
    during a request."""
    recorder = Recorder(target, history=history, tags=tags, on_unexpected=on_unexpected)
    inner = httpx_kwargs.pop("transport", None)
    pool = _split_options(httpx_kwargs)
    transport = RecordingTransport(inner or httpx2.HTTPTransport(**pool), recorder)
    return RecordingClient(recorder, transport=transport, **httpx_kwargs)


def recording_async_client(
    target: str,
    *,
    history: str | PathLike[str] | None = None,
    tags: Mapping[str, str] | None = None,
    on_unexpected: OnUnexpected | None = None,
    **httpx_kwargs: Any,
) -> RecordingAsyncClient:
    """The httpx2.AsyncClient counterpart of `recording_client`, for `AsyncOpenAI`."""
    recorder = Recorder(target, history=history, tags=tags, on_unexpected=on_unexpected)
    inner = httpx_kwargs.pop("transport", None)
    pool = _split_options(httpx_kwargs)
    transport = AsyncRecordingTransport(inner or httpx2.AsyncHTTPTransport(**pool), recorder)
    return RecordingAsyncClient(recorder, transport=transport, **httpx_kwargs)


def check_response(
    completion: Any,
    expected: Iterable[str | None] | PathLike[str],
    *,
    target: str | None = None,
) -> None:
    """Raise UnexpectedFingerprint unless `completion` (an openai SDK ChatCompletion or chunk,
    or the response as a dict) came from an expected backend.

    `expected`: the accepted fingerprints (None for a null fingerprint), or the path of an
    fpmon.lock, with `target` naming its entry; a lock checks the resolved model too."""
    fields = completion_fields(_as_dict(completion))
    if isinstance(fields, str):
        raise ValueError(f"not a chat completion: {fields}")
    fingerprint, model = fields["fingerprint"], fields["resolved_model"]
    if isinstance(expected, str):
        raise TypeError(
            "expected: a collection of fingerprints (for one, write [value]) or a Path to a lock"
        )
    if isinstance(expected, PathLike):
        path = Path(expected)
        if target is None:
            raise ValueError(f"checking against the lock file {path} needs target=")
        entry = read_lock(path).get(target)
        if entry is None:
            raise ConfigError(f"{path}: no entry for target {target!r} (fpmon accept {target})")
        fingerprints, models = entry.fingerprints, entry.models
    else:
        fingerprints = frozenset(NULL if value is None else value for value in expected)
        models = frozenset()
    if fingerprint not in fingerprints:
        raise UnexpectedFingerprint(target, "fingerprint", tuple(sorted(fingerprints)), fingerprint)
    if models and model not in models:
        raise UnexpectedFingerprint(target, "model", tuple(sorted(models)), model)


def _as_dict(completion: Any) -> Any:
    """The response as JSON data; a missing key stays missing (the SDK's to_dict leaves out
    what the server did not send, which is how an absent fingerprint is told from null)."""
    if isinstance(completion, Mapping):
        return dict(completion)
    for method in ("to_dict", "model_dump"):
        if callable(dump := getattr(completion, method, None)):
            return dump(exclude_unset=True) if method == "model_dump" else dump()
    raise TypeError(
        f"expected a ChatCompletion (or chunk) or a dict, not {type(completion).__name__}"
    )
