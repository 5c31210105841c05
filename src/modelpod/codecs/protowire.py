"""Just enough of the protobuf wire format to move large packed float tensors without Python loops.

The protobuf library parses and writes every EAS message; what it cannot do fast is turn a repeated
``float`` field into a numpy array (one Python object per value: about 11 ms per MiB). A packed
``repeated float`` is, on the wire, exactly the little-endian float32 bytes, so the codec finds
those bytes (:func:`fields`) and hands them to ``np.frombuffer``, or writes them in one piece
(:func:`field_bytes`). See https://protobuf.dev/programming-guides/encoding/.
"""

from __future__ import annotations

from collections.abc import Iterator

from modelpod.errors import WireError

VARINT, I64, LEN, I32 = 0, 1, 2, 5


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """(value, position after it)."""
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def fields(buf: bytes | memoryview, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int, int]]:
    """Each field of the message in ``buf[start:end]`` as (number, wire type, value start, value end).

    For VARINT fields the value span is the varint's bytes; for LEN fields it is the payload.
    """
    pos, end = start, len(buf) if end is None else end
    while pos < end:
        key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            _, after = read_varint(buf, pos)
        elif wire_type == LEN:
            length, pos = read_varint(buf, pos)
            after = pos + length
        elif wire_type == I64:
            after = pos + 8
        elif wire_type == I32:
            after = pos + 4
        else:
            raise WireError(f"wire type {wire_type} is not used by these messages")
        if after > end or number == 0:
            raise WireError("a field runs past the end of its message")
        yield number, wire_type, pos, after
        pos = after


def varint(value: int) -> bytes:
    """A non-negative int as a varint."""
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_bytes(number: int, payload: bytes | memoryview) -> list[bytes | memoryview]:
    """A LEN field (sub-message, string, bytes or packed values) as pieces to join."""
    return [varint(number << 3 | LEN) + varint(len(payload)), payload]
