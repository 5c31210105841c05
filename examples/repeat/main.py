"""Triton's ``repeat_int32`` example model, as a decoupled python model (a generator).

Triton's ``simple_grpc_custom_repeat.py`` client sends one request on a gRPC stream and reads one
response per element of ``IN``: ``OUT`` is that element and ``IDX`` its index, each sent
``DELAY[i]`` ms after the one before; ``WAIT`` ms pass after the last before the request is done.
A generator is a decoupled model: modelpod sends each ``yield`` as its own stream response.
"""

import time

import numpy as np


def get_model(data_dir):
    def repeat(IN, DELAY, WAIT):  # noqa: N803 - Triton's tensor names
        for i, value in enumerate(IN):
            if i < len(DELAY) and DELAY[i]:
                time.sleep(float(DELAY[i]) / 1000)
            yield {"OUT": np.array([value], dtype=np.int32), "IDX": np.array([i], dtype=np.uint32)}
        if WAIT[0]:
            time.sleep(float(WAIT[0]) / 1000)

    return repeat
