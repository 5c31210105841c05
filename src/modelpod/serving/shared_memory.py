"""System shared memory regions that clients register (Triton's extension), read and written safely.

A client creates a POSIX shared memory object (``shm_open``), registers a *region* of it (key,
offset, byte size) under a name, then names the region in an infer request's tensor parameters
instead of sending the bytes. This module is the server's book of regions; the protocols speak to
it through :mod:`modelpod.serving.protocols.v2_shm`.

Safety: the server keeps one open file descriptor per region and never maps the object. Inputs
are read with ``preadv`` straight into a fresh array, outputs written with ``pwrite``, so a client
that shrinks (``ftruncate``) or unlinks its object after registering it can make a request fail
with a clear 400, never crash the server: there is no mapping to touch past the object's end, so
no SIGBUS. Before every access the object's current size (``fstat``) and its name (the same inode
still at ``/dev/shm/<key>``) are checked, and a short read is an error too. Keys that name
modelpod's own worker segments (``modelpod-<pid>-...``) are refused. Unregistering closes the
descriptor; :meth:`SharedMemoryRegistry.close` (server shutdown) closes them all.

Every method runs on the server's event loop (HTTP and gRPC handlers both do); a lock per region
still keeps a descriptor from being closed while another thread reads through it.
"""

from __future__ import annotations

import _posixshmem  # CPython's shm_open (what multiprocessing.shared_memory uses)
import os
import stat
import threading
from typing import Any

import numpy as np

from modelpod.errors import ServeError, clip
from modelpod.serving.limits import Limits

#: where Linux keeps POSIX shared memory objects (the unlink check looks here)
SHM_DIR = "/dev/shm"
#: keys clients may not register: modelpod's own worker-bridge segments
RESERVED_PREFIXES = ("modelpod-",)
MAX_NAME = 256
_MAX_KEY = 255  # NAME_MAX
_CHUNK = 1 << 30  # one preadv/pwrite call moves at most this much (Linux caps a call near 2 GiB)


def _bad(message: str) -> ServeError:
    return ServeError("bad_input", message)


def _uint(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise _bad(f"{what} must be a non-negative integer, got {clip(repr(value))}")
    return value


def object_name(key: Any) -> str:
    """The object's name under /dev/shm for a client's key (``/name`` or ``name``); 400 for a key
    that is not one plain name (slashes past the first, ``.``/``..``, NUL, too long) or is reserved."""
    if not isinstance(key, str) or not key:
        raise _bad(f"'key' must be the name of a POSIX shared memory object such as '/my_region', "
                   f"got {clip(repr(key))}")
    name = key[1:] if key.startswith("/") else key
    if not name or "/" in name or "\0" in name or name in (".", "..") or len(name.encode()) > _MAX_KEY:
        raise _bad(f"key {clip(repr(key))} is not a POSIX shared memory object name: one '/' then up to "
                   f"{_MAX_KEY} bytes without '/'")
    if name.startswith(RESERVED_PREFIXES):
        raise _bad(f"key {clip(repr(key))} is reserved: modelpod's own worker segments cannot be registered")
    return name


class Region:
    """One registered region: ``byte_size`` bytes at ``offset`` in the object ``key``."""

    def __init__(self, name: str, key: str, offset: int, byte_size: int, fd: int, ident: tuple[int, int],
                 shm_name: str) -> None:
        self.name = name
        self.key = key
        self.offset = offset
        self.byte_size = byte_size
        self._fd = fd
        self._ident = ident
        self._shm_name = shm_name
        self._lock = threading.Lock()
        self.closed = False

    def status(self) -> dict[str, Any]:
        return {"name": self.name, "key": self.key, "offset": self.offset, "byte_size": self.byte_size}

    def check_span(self, offset: int, size: int, what: str) -> None:
        """400 unless ``size`` bytes at ``offset`` lie inside the region."""
        if offset + size > self.byte_size:
            raise _bad(f"{what}: offset {offset} + byte size {size} runs past the end of shared memory region "
                       f"'{clip(self.name)}' ({self.byte_size} bytes)")

    def _check_object(self, offset: int, size: int, what: str) -> int:
        """The object's position for ``offset`` after checking the region and object are still whole."""
        if self.closed:
            raise _bad(f"{what}: shared memory region '{clip(self.name)}' was unregistered")
        self.check_span(offset, size, what)
        start = self.offset + offset
        current = os.fstat(self._fd).st_size
        if current < start + size:
            raise _bad(f"{what}: the shared memory object '{clip(self.key)}' of region '{clip(self.name)}' shrank "
                       f"to {current} bytes after it was registered ({self.offset + self.byte_size} needed); "
                       "unregister the region and register it again")
        if os.path.isdir(SHM_DIR):
            try:
                now = os.stat(os.path.join(SHM_DIR, self._shm_name))
                same = (now.st_dev, now.st_ino) == self._ident
            except OSError:
                same = False
            if not same:
                raise _bad(f"{what}: the shared memory object '{clip(self.key)}' of region '{clip(self.name)}' was "
                           "unlinked (or replaced) after it was registered; unregister the region (which frees "
                           "the memory it still holds) and register the new object")
        return start

    def read(self, offset: int, size: int, what: str) -> np.ndarray:
        """A fresh uint8 array of ``size`` bytes copied from ``offset`` in the region."""
        self.check_span(offset, size, what)  # before allocating: a size the client names is not trusted
        out = np.empty(size, dtype=np.uint8)
        with self._lock:
            start = self._check_object(offset, size, what)
            view = memoryview(out)
            done = 0
            while done < size:
                got = os.preadv(self._fd, [view[done: done + _CHUNK]], start + done)
                if got <= 0:
                    raise _bad(f"{what}: the shared memory object '{clip(self.key)}' ended after {done} of "
                               f"{size} bytes (it shrank while being read)")
                done += got
        return out

    def write(self, offset: int, data: memoryview, what: str) -> None:
        """Copy ``data`` (a byte view) to ``offset`` in the region."""
        size = len(data)
        with self._lock:
            start = self._check_object(offset, size, what)
            done = 0
            while done < size:
                done += os.pwrite(self._fd, data[done: done + _CHUNK], start + done)

    def close(self) -> None:
        with self._lock:
            if not self.closed:
                self.closed = True
                os.close(self._fd)


class SharedMemoryRegistry:
    """The regions one server's clients registered, bounded in count and in bytes."""

    def __init__(self, max_regions: int, max_bytes: int) -> None:
        self.max_regions = max_regions
        self.max_bytes = max_bytes
        self.regions: dict[str, Region] = {}

    @classmethod
    def from_limits(cls, limits: Limits) -> SharedMemoryRegistry:
        return cls(limits.max_shm_regions, limits.max_shm_bytes)

    @property
    def registered_bytes(self) -> int:
        return sum(region.byte_size for region in self.regions.values())

    def register(self, name: Any, key: Any, offset: Any, byte_size: Any) -> Region:
        """Open ``key`` and register ``byte_size`` bytes of it at ``offset`` as ``name``; 400 naming
        what is wrong (a name in use, no such object, past its end, a limit reached)."""
        if not isinstance(name, str) or not name or len(name) > MAX_NAME:
            raise _bad(f"a shared memory region needs a name of 1 to {MAX_NAME} characters, got {clip(repr(name))}")
        if "/" in name or name in (".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in name):
            # such a name could not be addressed by the per-region REST paths afterwards
            raise _bad(f"region name {clip(repr(name))} must not contain '/' or control characters, nor be '.' "
                       "or '..'")
        what = f"failed to register shared memory region '{clip(name)}'"
        offset = _uint(offset, f"{what}: 'offset'")
        byte_size = _uint(byte_size, f"{what}: 'byte_size'")
        if byte_size == 0:
            raise _bad(f"{what}: 'byte_size' must be at least 1")
        if name in self.regions:
            raise _bad(f"shared memory region '{clip(name)}' is already registered; unregister it first")
        try:
            shm_name = object_name(key)
        except ServeError as err:
            raise _bad(f"{what}: {err.message}") from None
        if len(self.regions) >= self.max_regions:
            raise _bad(f"{what}: this server holds at most {self.max_regions} regions (--max-shm-regions); "
                       "unregister one first")
        if self.registered_bytes + byte_size > self.max_bytes:
            raise _bad(f"{what}: {byte_size} more bytes would pass the {self.max_bytes >> 20} MiB this server "
                       f"registers in all (--max-shm-mb; {self.registered_bytes} bytes registered now)")
        try:
            fd = _posixshmem.shm_open("/" + shm_name, os.O_RDWR, 0)
        except FileNotFoundError:
            raise _bad(f"{what}: no POSIX shared memory object {clip(repr(key))} exists on the server's host "
                       "(create it with shm_open first; the server must share its /dev/shm)") from None
        except OSError as exc:
            raise _bad(f"{what}: cannot open shared memory object {clip(repr(key))}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise _bad(f"{what}: {clip(repr(key))} is not a shared memory object")
            if offset + byte_size > info.st_size:
                raise _bad(f"{what}: offset {offset} + byte_size {byte_size} runs past the end of "
                           f"{clip(repr(key))} ({info.st_size} bytes)")
        except BaseException:
            os.close(fd)
            raise
        region = Region(name, key, offset, byte_size, fd, (info.st_dev, info.st_ino), shm_name)
        self.regions[name] = region
        return region

    def get(self, name: Any, what: str) -> Region:
        """The region called ``name``; 400 when none is registered under it."""
        region = self.regions.get(name) if isinstance(name, str) else None
        if region is None:
            raise _bad(f"{what}: no system shared memory region {clip(repr(name))} is registered "
                       "(register it first: POST /v2/systemsharedmemory/region/<name>/register)")
        return region

    def status(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every region's status, or the one called ``name`` (400 when unknown)."""
        if name:
            return [self.get(name, "shared memory status").status()]
        return [region.status() for region in self.regions.values()]

    def unregister(self, name: str | None = None) -> None:
        """Forget ``name`` (every region when None or empty) and close its descriptor; an unknown
        name is no error (as Triton). A request holding the region fails when it next touches it."""
        names = [name] if name else list(self.regions)
        for each in names:
            region = self.regions.pop(each, None)
            if region is not None:
                region.close()

    def close(self) -> None:
        """Unregister everything (server shutdown); idempotent."""
        self.unregister(None)
