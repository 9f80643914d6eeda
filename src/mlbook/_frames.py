"""Length-prefixed msgpack frames: a little-endian uint32 length, then one message.

The one framing mlbook's processes speak over pipes: the runner and its children
(:mod:`mlbook.experiments.contract`), the index builder and its worker
(:mod:`mlbook.datasets.index._parallel`). Each names its message type once
(:class:`Frames`); :class:`FrameReader` splits a byte stream back into messages.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import IO, Any, Generic, TypeVar

import msgspec

__all__ = ["HEADER", "FrameReader", "Frames"]

#: The length prefix of a frame.
HEADER = struct.Struct("<I")

T = TypeVar("T")


class Frames(Generic[T]):
    """Encode messages of one type (a struct, or a union of tagged structs) as frames,
    and decode them."""

    def __init__(self, kind: Any) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self.decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(kind)

    def encode(self, message: T) -> bytes:
        """One message as a frame."""
        payload = self._encoder.encode(message)
        return HEADER.pack(len(payload)) + payload

    def decode(self, payload: bytes | memoryview) -> T:
        """One frame's payload (without its length prefix) as a message."""
        return self.decoder.decode(payload)

    def read(self, stream: IO[bytes]) -> T | None:
        """The next message of a blocking ``stream`` (``None`` at its end).

        Raises:
            msgspec.DecodeError: the frame is not a valid message.
        """
        header = stream.read(HEADER.size)
        if len(header) < HEADER.size:
            return None
        (size,) = HEADER.unpack(header)
        payload = stream.read(size)
        if len(payload) < size:
            return None
        return self.decoder.decode(payload)


class FrameReader(Generic[T]):
    """The reading end: split a byte stream into decoded messages."""

    def __init__(self, frames: Frames[T]) -> None:
        self._decoder = frames.decoder
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[T]:
        """Add bytes; yield every complete message they finish.

        Raises:
            msgspec.DecodeError: a frame is not a valid message (the writer is broken).
        """
        self._buffer += data
        buffer = self._buffer
        start = 0
        view = memoryview(buffer)
        try:
            while len(buffer) - start >= HEADER.size:
                (size,) = HEADER.unpack_from(buffer, start)
                end = start + HEADER.size + size
                if end > len(buffer):
                    break
                yield self._decoder.decode(view[start + HEADER.size : end])
                start = end
        finally:
            view.release()
            del buffer[:start]

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole frame."""
        return len(self._buffer)
