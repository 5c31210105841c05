"""The worker bridge protocol, version :data:`BRIDGE_VERSION` (specified in ``docs/worker-protocol.md``).

A message is a 4-byte little-endian length followed by that many bytes of one UTF-8 JSON object
with a ``kind``. Tensors never travel in messages: a message names a shared-memory segment and
describes each tensor in it (name, KServe v2 datatype, shape, byte offset, byte length). Fixed-size
tensors are C-order, little-endian; ``BYTES`` tensors are their elements, each a 4-byte
little-endian length and the bytes (the KServe v2 binary layout), with ``"text": true`` when the
elements are strings (UTF-8).

This module only frames messages and lays tensors out; it needs the standard library and numpy.
"""

from __future__ import annotations

import json
import math
import socket
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelpod.codecs.datatypes import V2_BY_DTYPE, V2_NUMPY
from modelpod.errors import BridgeError

#: bumped on any change a peer could notice; both ends check it at the handshake
BRIDGE_VERSION = 1
#: the ``protocol`` every hello names
PROTOCOL_NAME = "modelpod-worker"
#: control messages are small; a length past this is a broken peer, not a big request
MAX_MESSAGE_BYTES = 16 << 20
#: every tensor starts at a multiple of this many bytes in its segment
ALIGN = 64
#: what a worker answers for a request it could not run: the kinds a server maps to statuses
ERROR_KINDS = ("bad_input", "too_large", "model_failed", "protocol")

#: no dim, and no product of the non-zero dims, past this (what numpy can represent)
MAX_DIM = MAX_ELEMENTS = 1 << 48

_LENGTH = struct.Struct("<I")


# -- messages ----------------------------------------------------------------------------------
try:  # the server has orjson; a package's own environment may not (the JSON is the same)
    import orjson

    def _dumps(message: Mapping[str, Any]) -> bytes:
        return orjson.dumps(message)

    _loads = orjson.loads
except ImportError:  # pragma: no cover - exercised by isolated workers
    def _dumps(message: Mapping[str, Any]) -> bytes:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()

    _loads = json.loads


class Channel:
    """One end of the bridge's socket: whole messages in, whole messages out."""

    __slots__ = ("sock", "_buffer")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def send(self, message: Mapping[str, Any]) -> None:
        """Write one message (raises OSError if the peer is gone)."""
        body = _dumps(message)
        self.sock.sendall(_LENGTH.pack(len(body)) + body)

    def recv(self) -> dict[str, Any]:
        """Read one message; EOFError when the peer closed (or died), BridgeError when it is garbage."""
        buffer = self._buffer
        while len(buffer) < 4:
            self._fill()
        (size,) = _LENGTH.unpack_from(buffer)
        if size > MAX_MESSAGE_BYTES:
            buffer.clear()  # the stream is lost: its owner stops the peer
            raise BridgeError(f"worker bridge message of {size} bytes (the limit is {MAX_MESSAGE_BYTES})")
        while len(buffer) < 4 + size:
            self._fill()
        body = bytes(buffer[4:4 + size])
        del buffer[:4 + size]
        try:
            message = _loads(body)
        except ValueError as exc:
            raise BridgeError(f"worker bridge message is not JSON: {exc}") from None
        if not isinstance(message, dict) or not isinstance(message.get("kind"), str):
            raise BridgeError("worker bridge message is not a JSON object with a 'kind'")
        return message

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("the other end of the worker bridge closed")
        self._buffer += chunk

    def close(self) -> None:
        self.sock.close()


# -- tensors -----------------------------------------------------------------------------------
class Layout:
    """Where a dict of arrays goes in a segment: ``entries`` (what the message says) and ``size``."""

    __slots__ = ("entries", "size", "_blobs")

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.entries: list[dict[str, Any]] = []
        self._blobs: dict[str, bytes] = {}
        offset = 0
        for name, array in arrays.items():
            if array.dtype.kind in "OUS":
                blob, text = _encode_bytes(name, array)
                self._blobs[name] = blob
                entry = {"name": name, "datatype": "BYTES", "shape": list(array.shape), "offset": offset,
                         "nbytes": len(blob)}
                if text:
                    entry["text"] = True
            else:
                datatype = V2_BY_DTYPE.get(array.dtype.newbyteorder("="))
                if datatype is None:
                    raise BridgeError(f"tensor '{name}': dtype {array.dtype} has no worker bridge datatype")
                entry = {"name": name, "datatype": datatype, "shape": list(array.shape), "offset": offset,
                         "nbytes": array.nbytes}
            self.entries.append(entry)
            offset += -(-entry["nbytes"] // ALIGN) * ALIGN
        self.size = offset

    def write(self, buf: memoryview, arrays: Mapping[str, np.ndarray]) -> None:
        """Copy the arrays into ``buf`` (a segment of at least ``size`` bytes) where ``entries`` say."""
        for entry in self.entries:
            name, offset = entry["name"], entry["offset"]
            blob = self._blobs.get(name)
            if blob is not None:
                buf[offset:offset + len(blob)] = blob
                continue
            array = arrays[name]
            dest = np.ndarray(array.shape, dtype=array.dtype.newbyteorder("<"), buffer=buf, offset=offset)
            np.copyto(dest, array, casting="equiv")


def read_tensors(buf: memoryview, entries: Any, copy: bool) -> dict[str, np.ndarray]:
    """The arrays ``entries`` describe in ``buf``: views into it (``copy=False``) or copies.

    Every entry is checked against the segment first; BridgeError names what does not fit."""
    if not isinstance(entries, list):
        raise BridgeError("worker bridge: 'inputs'/'outputs' must be a list of tensor entries")
    out: dict[str, np.ndarray] = {}
    for entry in entries:
        name, dtype, shape, offset, nbytes = _checked_entry(entry, len(buf))
        if dtype is None:
            out[name] = _decode_bytes(name, buf[offset:offset + nbytes], shape, bool(entry.get("text")))
            continue
        view = np.ndarray(shape, dtype=dtype, buffer=buf, offset=offset)
        out[name] = view.copy() if copy else view
    return out


def _checked_entry(entry: Any, limit: int) -> tuple[str, np.dtype | None, tuple[int, ...], int, int]:
    if not isinstance(entry, dict):
        raise BridgeError("worker bridge: a tensor entry is not an object")
    name, datatype, shape = entry.get("name"), entry.get("datatype"), entry.get("shape")
    offset, nbytes = entry.get("offset"), entry.get("nbytes")
    if not isinstance(name, str) or datatype not in V2_NUMPY:
        raise BridgeError(f"worker bridge: tensor entry {str(entry)[:200]} has no name or an unknown datatype")
    if not isinstance(shape, list) or not all(type(d) is int and 0 <= d <= MAX_DIM for d in shape):
        raise BridgeError(f"worker bridge: tensor '{name}': shape must be a list of ints from 0 to 2**48")
    if type(offset) is not int or type(nbytes) is not int or offset < 0 or nbytes < 0 or offset + nbytes > limit:
        raise BridgeError(f"worker bridge: tensor '{name}': bytes {offset}..+{nbytes} lie outside the "
                          f"segment ({limit} bytes)")
    dtype = V2_NUMPY[datatype]
    count = math.prod(shape)
    if dtype is not None and count * dtype.itemsize != nbytes:
        raise BridgeError(f"worker bridge: tensor '{name}': {nbytes} bytes do not make a {datatype} "
                          f"tensor of shape {shape}")
    if dtype is None and count * 4 > nbytes:  # each element has at least its 4-byte length
        raise BridgeError(f"worker bridge: tensor '{name}': {nbytes} bytes cannot hold {count} BYTES elements")
    if math.prod(d for d in shape if d) > MAX_ELEMENTS:
        raise BridgeError(f"worker bridge: tensor '{name}': shape {shape} is too large")
    return name, dtype, tuple(shape), offset, nbytes


def _encode_bytes(name: str, array: np.ndarray) -> tuple[bytes, bool]:
    """(the BYTES layout of ``array``, whether every element was a str)."""
    parts: list[bytes] = []
    texts = 0
    for element in array.reshape(-1).tolist():
        if isinstance(element, str):
            element = element.encode()
            texts += 1
        elif not isinstance(element, (bytes, bytearray, memoryview)):
            raise BridgeError(f"tensor '{name}': a {type(element).__name__} element in a string tensor "
                              "(elements must be bytes or str)")
        parts.append(_LENGTH.pack(len(element)))
        parts.append(bytes(element))
    return b"".join(parts), array.dtype.kind == "U" or (texts > 0 and texts == array.size)


def _decode_bytes(name: str, data: memoryview, shape: tuple[int, ...], text: bool) -> np.ndarray:
    count = math.prod(shape)
    out = np.empty(count, dtype=object)
    pos, end = 0, len(data)
    for i in range(count):
        if pos + 4 > end:
            raise BridgeError(f"worker bridge: tensor '{name}': BYTES data ends after {i} of {count} elements")
        (size,) = _LENGTH.unpack_from(data, pos)
        pos += 4
        if pos + size > end:
            raise BridgeError(f"worker bridge: tensor '{name}': element {i} runs past the tensor's bytes")
        element = bytes(data[pos:pos + size])
        pos += size
        if text:
            try:
                out[i] = element.decode()
            except UnicodeDecodeError:
                raise BridgeError(f"worker bridge: tensor '{name}': element {i} is not UTF-8") from None
        else:
            out[i] = element
    return out.reshape(shape)
