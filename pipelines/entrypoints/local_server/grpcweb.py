"""gRPC-web, the protocol the Kubeflow UI speaks to ML Metadata, over plain HTTP/1.1.

What the UI's ``grpc-web`` client sends (its server proxies ``/ml_metadata.*`` as is):
``POST /<package>.<Service>/<Method>`` with ``Content-Type: application/grpc-web-text``
(the body base64) or ``application/grpc-web`` / ``application/grpc-web+proto`` (binary).
The body is length-prefixed messages: one byte of flags (0 for a message), four bytes of
length (big-endian), then the serialized request. The answer has the same framing: the
response message, then a trailer frame (flags 0x80) holding ``grpc-status`` and
``grpc-message`` as HTTP/1 header lines; in text mode the whole answer is base64.
(The protocol: grpc/grpc PROTOCOL-WEB.md.) This module only frames; what a method does is
the caller's (``metadata.Metadata.call``).
"""

from __future__ import annotations

import base64
import struct
import urllib.parse
from typing import Callable

TEXT = "application/grpc-web-text"
BINARY = "application/grpc-web"
MESSAGE_FLAG = 0x00
TRAILER_FLAG = 0x80
# grpc status codes used here
OK, INVALID_ARGUMENT, NOT_FOUND, PERMISSION_DENIED, UNIMPLEMENTED, INTERNAL, \
    UNAUTHENTICATED = 0, 3, 5, 7, 12, 13, 16


class GrpcWebError(Exception):
    """A call that ends with a gRPC status other than OK."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def is_text(content_type: str) -> bool:
    """Whether the body is base64 (``application/grpc-web-text[+proto]``)."""
    return content_type.split(";")[0].strip().lower().startswith(TEXT)


def is_grpc_web(content_type: str) -> bool:
    """Whether ``content_type`` is one of gRPC-web's (text or binary, ``+proto``)."""
    base = content_type.split(";")[0].strip().lower()
    return base in (TEXT, TEXT + "+proto", BINARY, BINARY + "+proto")


def frame(payload: bytes, flags: int = MESSAGE_FLAG) -> bytes:
    """One length-prefixed frame."""
    return struct.pack(">BI", flags, len(payload)) + payload


def frames(body: bytes) -> list:
    """The ``(flags, payload)`` frames of a binary body.

    Raises:
        GrpcWebError: INVALID_ARGUMENT when a frame is cut short.
    """
    out, at = [], 0
    while at < len(body):
        if len(body) - at < 5:
            raise GrpcWebError(INVALID_ARGUMENT, f"a gRPC-web frame header is cut short "
                                                 f"({len(body) - at} of 5 bytes)")
        flags, size = struct.unpack(">BI", body[at:at + 5])
        if len(body) - at - 5 < size:
            raise GrpcWebError(INVALID_ARGUMENT, f"a gRPC-web frame says {size} bytes, "
                                                 f"{len(body) - at - 5} follow")
        out.append((flags, body[at + 5:at + 5 + size]))
        at += 5 + size
    return out


def decode_text(body: bytes) -> bytes:
    """A text-mode body as bytes: base64, possibly several padded chunks one after the
    other (the client may encode each frame on its own)."""
    out, rest = b"", body.strip()
    while rest:
        end = rest.find(b"=")
        if end < 0:
            chunk, rest = rest, b""
        else:
            end += 1
            while end < len(rest) and rest[end:end + 1] == b"=":
                end += 1
            chunk, rest = rest[:end], rest[end:]
        try:
            out += base64.b64decode(chunk, validate=False)
        except ValueError as exc:
            raise GrpcWebError(INVALID_ARGUMENT, f"the gRPC-web text body is not base64: "
                                                 f"{exc}") from None
    return out


def request_message(content_type: str, body: bytes) -> bytes:
    """The one request message of a unary call's body.

    Raises:
        GrpcWebError: INVALID_ARGUMENT when there is not exactly one message frame.
    """
    raw = decode_text(body) if is_text(content_type) else body
    messages = [payload for flags, payload in frames(raw) if not flags & TRAILER_FLAG]
    if len(messages) != 1:
        raise GrpcWebError(INVALID_ARGUMENT, f"a unary gRPC-web call carries one message; "
                                             f"this one carries {len(messages)}")
    return messages[0]


def trailers(code: int, message: str = "") -> bytes:
    """The trailer frame: ``grpc-status`` and the percent-encoded ``grpc-message``."""
    lines = f"grpc-status:{code}\r\n"
    if message:
        lines += f"grpc-message:{urllib.parse.quote(message, safe=' ')}\r\n"
    return frame(lines.encode("ascii"), TRAILER_FLAG)


def respond(content_type: str, body: bytes,
            call: Callable[[bytes], bytes]) -> tuple:
    """Answers one unary call: ``(content type, body bytes)`` to send with HTTP 200.

    Args:
        content_type: The request's Content-Type (decides text or binary).
        body: The request body.
        call: Takes the serialized request, returns the serialized response; raises
            GrpcWebError for a status other than OK.
    """
    try:
        answer = frame(call(request_message(content_type, body))) + trailers(OK)
    except GrpcWebError as err:
        answer = trailers(err.code, err.message)
    return _encoded(content_type, answer)


def error(content_type: str, code: int, message: str) -> tuple:
    """A call answered with a status only: ``(content type, body bytes)``."""
    return _encoded(content_type, trailers(code, message))


def _encoded(content_type: str, answer: bytes) -> tuple:
    if is_text(content_type):
        return TEXT + "+proto", base64.b64encode(answer)
    return BINARY + "+proto", answer
