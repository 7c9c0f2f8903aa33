"""The watch stream's frames (`GET /agent/v1/desired-state/watch`), shared by the control plane that writes
them and the agent that reads them.

Frames are server-sent events (`text/event-stream`), so that proxies and tools know the format:

- `event: open` with `data: {"keep_alive": S, "expires_in": S, "delivery_window": S}`: written at once when
  the stream opens, so an agent behind a proxy that buffers responses notices (no first frame) and falls
  back to the long-poll; `delivery_window` is the control plane's, which the agent keeps to when it takes
  states (a control plane before it did not send it);
- `event: state`, `id: <hash>`, `data: <the DesiredState JSON>`: a new desired state; the data is the very
  body the long-poll answers with (compact JSON has no line breaks), framed without encoding it again;
- `: keep-alive`: a comment every `keep_alive` seconds while nothing changes;
- `event: end` with `data: {"reason": R}`: the control plane ends the stream (R is one of `END_REASONS`); an
  agent reopens at once. A stream that stops without it was cut.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

MEDIA_TYPE = "text/event-stream"
PATH = "/agent/v1/desired-state/watch"
KEEP_ALIVE_FRAME = b": keep-alive\n\n"
# the token the stream was opened with expired; the control plane stops; the runtime was deleted or its key
# revoked
END_REASONS = ("token-expired", "shutdown", "runtime-gone")
# A frame longer than this is refused by the reader: a broken proxy cannot make an agent buffer without end.
MAX_FRAME_BYTES = 64 * 1024 * 1024


def state_frame(state_hash: str, body: bytes) -> bytes:
    """The `state` event carrying `body` (compact JSON, one line) as it is."""
    return b"event: state\nid: %s\ndata: %s\n\n" % (state_hash.encode("ascii"), body)


def open_frame(keep_alive: float, expires_in: float, delivery_window: float | None = None) -> bytes:
    """Without `delivery_window`: the open frame of a control plane that did not announce one."""
    fields = {"keep_alive": keep_alive, "expires_in": round(expires_in, 1)}
    if delivery_window is not None:
        fields["delivery_window"] = delivery_window
    data = json.dumps(fields)
    return f"event: open\ndata: {data}\n\n".encode()


def end_frame(reason: str) -> bytes:
    return f"event: end\ndata: {json.dumps({'reason': reason})}\n\n".encode()


@dataclass(frozen=True)
class Frame:
    """One frame as read: `event` is "keep-alive" for a comment."""

    event: str
    id: str = ""
    data: bytes = b""


class FrameError(ValueError):
    """The stream is not made of frames as above."""


class FrameReader:
    """Splits the stream's bytes, as they arrive in chunks of any size, into frames."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buffer = bytearray()
        self._searched = 0  # the buffer before this holds no frame end
        self._max = max_frame_bytes

    def feed(self, chunk: bytes) -> list[Frame]:
        self._buffer += chunk
        frames: list[Frame] = []
        while True:
            end = self._buffer.find(b"\n\n", max(0, self._searched - 1))
            if end < 0:
                self._searched = len(self._buffer)
                if len(self._buffer) > self._max:
                    raise FrameError(f"a frame longer than {self._max} bytes")
                return frames
            frames.append(_parse(bytes(self._buffer[:end])))
            del self._buffer[: end + 2]
            self._searched = 0

    @property
    def pending(self) -> bool:
        """Whether part of a frame was read."""
        return bool(self._buffer)


def _parse(block: bytes) -> Frame:
    fields: dict[bytes, bytes] = {}
    for line in block.split(b"\n"):
        if line.startswith(b":"):
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            raise FrameError(f"a line without a field name: {line[:40]!r}")
        fields[name] = value[1:] if value.startswith(b" ") else value
    if not fields:
        return Frame("keep-alive")
    try:
        return Frame(
            fields.get(b"event", b"message").decode(),
            fields.get(b"id", b"").decode(),
            fields.get(b"data", b""),
        )
    except UnicodeDecodeError:
        raise FrameError("a frame's event or id is not UTF-8") from None
