"""POSIX shared-memory segments, without Python's resource tracker.

``multiprocessing.shared_memory`` registers every segment with a resource-tracker process, which
unlinks it when *that* process's tree ends; a worker started as a plain program (the bridge does
not use multiprocessing) would get a tracker of its own that unlinks the server's segments when the
worker dies. Here a segment is just ``shm_open`` + ``mmap``: the owner unlinks it, and segments of
owners killed outright are removed by :mod:`modelpod.serving.execution.stale` (they are named
``modelpod-<owner pid>-<random>``).
"""

from __future__ import annotations

import _posixshmem  # CPython's shm_open / shm_unlink (what multiprocessing.shared_memory uses)
import mmap
import os
import secrets

_MIN_SIZE = 1 << 20


def owned_prefix(pid: int | None = None) -> str:
    """``modelpod-<pid>-``: the start of a name that ``pid`` (default: this process) owns."""
    return f"modelpod-{os.getpid() if pid is None else pid}-"


class Segment:
    """One mapped segment: ``name`` (without the leading '/'), ``size`` and ``buf`` (a memoryview)."""

    def __init__(self, name: str, create: bool, size: int = 0) -> None:
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = _posixshmem.shm_open("/" + name, flags, mode=0o600)
        try:
            if create:
                os.ftruncate(fd, size)
            else:
                size = os.fstat(fd).st_size
            self._mmap = mmap.mmap(fd, size)
        except BaseException:
            if create:
                _posixshmem.shm_unlink("/" + name)
            raise
        finally:
            os.close(fd)
        self.name = name
        self.size = size
        self.buf = memoryview(self._mmap)

    def close(self) -> None:
        """Unmap (views still alive keep the memory mapped until they go)."""
        try:
            self.buf.release()
            self._mmap.close()
        except BufferError:  # a numpy view still points into it: the mapping goes with the view
            pass

    def unlink(self) -> None:
        try:
            _posixshmem.shm_unlink("/" + self.name)
        except FileNotFoundError:
            pass


def unlink(name: str) -> None:
    """Remove a segment by name (one whose owner died); a missing one is no error."""
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        pass


class OwnedSegment:
    """A growable segment this process creates and unlinks, named ``<prefix><random>``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.segment: Segment | None = None

    def ensure(self, size: int) -> Segment:
        """A segment of at least ``size`` bytes (a new, doubled one when the current is too small)."""
        if self.segment is None or self.segment.size < size:
            self.release()
            size = max(size, _MIN_SIZE) * 2 if size else _MIN_SIZE
            while self.segment is None:
                try:
                    self.segment = Segment(f"{self.prefix}{secrets.token_hex(4)}", create=True, size=size)
                except FileExistsError:
                    continue
        return self.segment

    def release(self) -> None:
        if self.segment is not None:
            self.segment.unlink()
            self.segment.close()
            self.segment = None


class AttachedSegment:
    """A segment another process owns, re-attached whenever the name it is asked for changes."""

    def __init__(self) -> None:
        self.segment: Segment | None = None

    def get(self, name: str) -> Segment:
        if self.segment is None or self.segment.name != name:
            self.close()
            self.segment = Segment(name, create=False)
        return self.segment

    def close(self) -> None:
        if self.segment is not None:
            self.segment.close()
            self.segment = None
