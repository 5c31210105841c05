"""The worker bridge: how a server talks to a model running in another process (any language).

See ``docs/worker-protocol.md``: length-prefixed JSON control messages over a socket, tensors in
POSIX shared memory. :mod:`.protocol` frames messages and lays tensors out; :mod:`.shm` holds the
segments. The Python worker is :mod:`modelpod.runtime.worker`; the server side is
:mod:`modelpod.runtime.workerproc`.
"""
