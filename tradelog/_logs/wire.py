"""Frames on the pipes between a process and its log writer helper (:mod:`tradelog._logs.helper`).

One frame is a 4-byte big-endian length and a pickle. The pipes are private to the two
processes (created by the parent, passed to the child it starts, closed on ``exec`` everywhere
else), so what is unpickled was pickled by tradelog on the other end.
"""

from __future__ import annotations

import io
import pickle
import struct
from typing import IO, Any, Final

from tradelog._logs.sanitize import to_jsonable

__all__ = ["dumps", "loads", "read_frame", "write_frame"]

HEADER: Final = struct.Struct(">I")
_PLAIN: Final = frozenset({str, int, float, bool, type(None), tuple, list, dict})


class _AsText(pickle.Pickler):
    """Pickles an object pickle refuses (a key that is an arbitrary object) as its text."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) in _PLAIN:
            return NotImplemented
        return str, (str(to_jsonable(obj)),)


def dumps(message: tuple[Any, ...]) -> bytes:
    """``message`` pickled; anything pickle refuses inside it travels as its text."""
    try:
        return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        buffer = io.BytesIO()
        _AsText(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(message)
        return buffer.getvalue()


def loads(payload: bytes) -> tuple[Any, ...]:
    """A message written by :func:`dumps` on the other end of a private pipe."""
    message: tuple[Any, ...] = pickle.loads(payload)  # noqa: S301 - see the module docstring
    return message


def write_frame(out: IO[bytes], payload: bytes) -> None:
    """Write one frame (the caller serialises writers)."""
    out.write(HEADER.pack(len(payload)) + payload)
    out.flush()


def read_frame(source: IO[bytes]) -> bytes | None:
    """The next frame's payload; None at the end of the pipe."""
    head = source.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    payload = source.read(size)
    if len(payload) < size:
        return None
    return payload
