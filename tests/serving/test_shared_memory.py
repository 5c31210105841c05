"""The shared memory region book on its own (no server): real POSIX objects registered, read and
written; objects that shrink, vanish or are replaced after registering fail the access, never the
process; limits, reserved and malformed keys; descriptors closed."""

from __future__ import annotations

import _posixshmem
import mmap
import os
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from modelpod.errors import ServeError
from modelpod.serving.shared_memory import SharedMemoryRegistry, object_name


@pytest.fixture
def make_object() -> Iterator:
    made: list[str] = []

    def make(size: int, fill: bytes = b"") -> str:
        key = f"/mp_unit_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        fd = _posixshmem.shm_open(key, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        os.ftruncate(fd, size)
        if fill:
            os.pwrite(fd, fill, 0)
        os.close(fd)
        made.append(key)
        return key

    yield make
    for key in made:
        try:
            _posixshmem.shm_unlink(key)
        except FileNotFoundError:
            pass


def _refused(call, *words: str) -> str:
    with pytest.raises(ServeError) as exc:
        call()
    assert exc.value.http_status == 400, exc.value.message
    for word in words:
        assert word in exc.value.message, exc.value.message
    return exc.value.message


def test_register_read_write_status_unregister(make_object) -> None:
    key = make_object(64, bytes(range(64)))
    book = SharedMemoryRegistry(4, 1 << 20)
    region = book.register("r", key, 16, 32)
    assert book.status() == [{"name": "r", "key": key, "offset": 16, "byte_size": 32}]
    assert bytes(region.read(0, 8, "t")) == bytes(range(16, 24))
    region.write(4, memoryview(b"\xff\xfe"), "t")
    fd = os.open(f"/dev/shm{key}", os.O_RDONLY)
    assert os.pread(fd, 4, 18) == b"\x12\x13\xff\xfe"
    os.close(fd)
    _refused(lambda: region.read(30, 4, "t"), "runs past the end of shared memory region 'r' (32 bytes)")
    book.unregister("r")
    assert book.status() == [] and region.closed
    _refused(lambda: region.read(0, 4, "t"), "was unregistered")


def test_a_shrunk_object_fails_the_access_not_the_process(make_object) -> None:
    key = make_object(1 << 16)
    book = SharedMemoryRegistry(4, 1 << 20)
    region = book.register("r", key, 0, 1 << 16)
    fd = os.open(f"/dev/shm{key}", os.O_RDWR)
    os.ftruncate(fd, 100)  # a mapping of the old size would now SIGBUS past byte 100
    _refused(lambda: region.read(0, 1 << 16, "input 'x'"), "input 'x'", "shrank to 100 bytes")
    _refused(lambda: region.write(0, memoryview(bytes(1 << 16)), "output 'y'"), "shrank to 100 bytes")
    assert os.fstat(fd).st_size == 100  # nothing written past the end either
    assert bytes(region.read(0, 100, "t")) == bytes(100)  # what is still there can be used
    os.close(fd)
    book.close()


def test_an_unlinked_or_replaced_object_is_refused(make_object) -> None:
    key = make_object(64)
    book = SharedMemoryRegistry(4, 1 << 20)
    region = book.register("r", key, 0, 64)
    _posixshmem.shm_unlink(key)
    _refused(lambda: region.read(0, 4, "t"), "unlinked")
    fd = _posixshmem.shm_open(key, os.O_RDWR | os.O_CREAT, 0o600)  # a new object under the same key
    os.ftruncate(fd, 64)
    os.close(fd)
    _refused(lambda: region.read(0, 4, "t"), "replaced")
    book.close()


def test_the_server_never_maps_the_object(make_object) -> None:
    """Reads and writes go through the descriptor: a client mapping sees them, and no mapping of the
    server's exists to fault on."""
    key = make_object(4096)
    book = SharedMemoryRegistry(4, 1 << 20)
    region = book.register("r", key, 0, 4096)
    fd = os.open(f"/dev/shm{key}", os.O_RDWR)
    view = mmap.mmap(fd, 4096)
    region.write(0, memoryview(np.arange(8, dtype=np.float32).view(np.uint8)), "t")
    assert np.frombuffer(view, dtype=np.float32, count=8).tolist() == list(range(8))
    with open("/proc/self/maps") as maps:
        assert sum(key[1:] in line for line in maps) == 1  # only the test's own mapping
    view.close()
    os.close(fd)
    book.close()


def test_register_refusals_and_limits(make_object) -> None:
    key = make_object(1024)
    book = SharedMemoryRegistry(2, 1500)
    _refused(lambda: book.register("r", key, 1000, 25), "runs past the end", "(1024 bytes)")
    _refused(lambda: book.register("r", "/mp_missing_" + uuid.uuid4().hex, 0, 8), "no POSIX shared memory object")
    _refused(lambda: book.register("", key, 0, 8), "needs a name")
    _refused(lambda: book.register("r", key, -1, 8), "'offset' must be a non-negative integer")
    _refused(lambda: book.register("r", key, True, 8), "'offset' must be")
    book.register("a", key, 0, 1000)
    _refused(lambda: book.register("a", key, 0, 8), "already registered")
    _refused(lambda: book.register("b", key, 0, 501), "--max-shm-mb")
    book.register("b", key, 0, 500)
    _refused(lambda: book.register("c", key, 0, 1), "--max-shm-regions", "at most 2")
    book.unregister("missing")  # no error, as Triton
    book.unregister()
    assert book.regions == {}


@pytest.mark.parametrize("key", ["", "/", "//x", "/a/b", "/..", ".", "x\0y", "/" + "k" * 256, 7, None])
def test_malformed_keys(key) -> None:
    _refused(lambda: object_name(key))


def test_reserved_keys() -> None:
    _refused(lambda: object_name("/modelpod-1234-abcdef"), "reserved")
    assert object_name("/plain") == object_name("plain") == "plain"


def test_close_closes_every_descriptor(make_object) -> None:
    key = make_object(64)
    book = SharedMemoryRegistry(8, 1 << 20)

    def held() -> int:
        return sum(key[1:] in os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                   if os.path.exists(f"/proc/self/fd/{fd}"))

    for i in range(5):
        book.register(f"r{i}", key, 0, 8)
    assert held() == 5
    book.close()
    book.close()
    assert held() == 0
