"""OTLP/HTTP bodies in and out: the content types, gzip, the OTLP/JSON mapping, and the answers
the spec asks for (an Export*ServiceResponse, or a google.rpc.Status for a refused request), in
the encoding of the request.

Decoding uses the official `opentelemetry-proto` messages, so a payload means here what it
means to every OpenTelemetry SDK and the Collector. OTLP/JSON is protobuf's JSON mapping with
three differences (OTLP spec, "JSON Protobuf Encoding"): trace and span ids are hex, not
base64; enums are integers; unknown fields are ignored. Integers of 64 bits may come as strings
or numbers; protobuf's parser takes both.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.rpc import status_pb2

from fp_monitor.net.untrusted import parse_json

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_HEX_IDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
_M = TypeVar("_M", bound=Message)


class Refused(Exception):
    """A request answered with an error status and a google.rpc.Status body."""

    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass(frozen=True)
class Encoding:
    """How one request's body is written, and so how its answer is."""

    json: bool

    @property
    def content_type(self) -> str:
        return JSON if self.json else PROTOBUF

    @classmethod
    def of(cls, content_type: str) -> Encoding:
        """From the request's Content-Type (parameters such as charset are ignored)."""
        media = content_type.partition(";")[0].strip().lower()
        if media == PROTOBUF:
            return cls(json=False)
        if media == JSON:
            return cls(json=True)
        shown = json.dumps(media[:100])
        raise Refused(415, f"Content-Type {shown} is not supported: send {PROTOBUF} or {JSON}")


def decompressed(body: bytes, content_encoding: str, limit: int) -> bytes:
    """The body without its Content-Encoding (identity or gzip), at most `limit` bytes."""
    codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return body
    if codings != ["gzip"]:
        shown = json.dumps(content_encoding[:100])
        raise Refused(
            415,
            f"Content-Encoding {shown} is not supported: send gzip or none",
            ((b"accept-encoding", b"gzip"),),
        )
    out = bytearray()
    data = body
    try:
        while data:  # gzip members may follow each other (RFC 1952 2.2)
            member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            out += member.decompress(data, limit + 1 - len(out))
            if len(out) > limit:
                raise Refused(413, f"the body is larger than {limit} bytes once decompressed")
            if not member.eof:
                if member.unconsumed_tail:  # stopped at the limit with input left
                    raise Refused(413, f"the body is larger than {limit} bytes once decompressed")
                raise Refused(400, "the gzip body is cut short")
            data = member.unused_data
    except zlib.error as exc:
        raise Refused(400, f"the body is not valid gzip: {exc}") from None
    return bytes(out)


def parse(body: bytes, encoding: Encoding, message: type[_M]) -> _M:
    """The request message, or Refused(400) saying why it cannot be read."""
    what = message.DESCRIPTOR.name
    if not encoding.json:
        try:
            return message.FromString(body)
        except (DecodeError, RecursionError) as exc:
            raise Refused(400, f"the body is not a valid protobuf {what}: {exc}") from None
    try:
        data = parse_json(body)  # a lone surrogate in a string is made safe to store
    except (ValueError, RecursionError) as exc:
        raise Refused(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Refused(400, f"the body is not an OTLP/JSON {what}: expected a JSON object")
    parsed = message()
    try:
        json_format.ParseDict(_hex_ids_as_base64(data), parsed, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        raise Refused(400, f"the body is not a valid OTLP/JSON {what}: {exc}") from None
    return parsed


def _hex_ids_as_base64(value: Any) -> Any:
    """OTLP/JSON's hex ids in the base64 that protobuf's JSON mapping reads for bytes."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if key in _HEX_IDS and isinstance(inner, str):
                    try:
                        item[key] = base64.b64encode(bytes.fromhex(inner)).decode()
                    except ValueError:
                        raise Refused(
                            400, f"{key}: {json.dumps(inner[:40])} is not a hex id"
                        ) from None
                else:
                    stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)
    return value


def answer(message: Message, encoding: Encoding) -> bytes:
    """A response message in the request's encoding (OTLP/JSON: lowerCamelCase keys)."""
    if encoding.json:
        return json.dumps(json_format.MessageToDict(message), separators=(",", ":")).encode()
    return message.SerializeToString()


def refusal(refused: Refused, encoding: Encoding | None) -> tuple[bytes, str]:
    """The google.rpc.Status body of a refused request, and its content type; a request whose
    encoding is unknown (415) gets protobuf, OTLP's default."""
    status = status_pb2.Status(code=_RPC_CODES.get(refused.status, 2), message=refused.message)
    encoding = encoding or Encoding(json=False)
    return answer(status, encoding), encoding.content_type


# HTTP status -> google.rpc.Code, as gRPC maps them (so a client logs a familiar code).
_RPC_CODES = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    404: 12,  # UNIMPLEMENTED
    405: 12,
    413: 8,  # RESOURCE_EXHAUSTED
    415: 3,
    429: 8,
    503: 14,  # UNAVAILABLE
}
