"""Triton's ``simple_sequence`` example model, as a stateful python model.

Triton's example repository serves ``simple_sequence`` (an ONNX graph fed START and READY control
tensors by its sequence batcher) to its client examples (``simple_http_sequence_sync_infer_client.py``,
``simple_grpc_sequence_stream_infer_client.py``...). Its graph computes ``OUTPUT = READY * (INPUT +
START)``: the input, plus one on the request that starts the sequence. Here the sequence's place
comes in ``sequence`` (a ``modelpod.SequenceContext``) instead of control tensors, so the clients
get the numbers they check, unchanged.
"""

import numpy as np


class SimpleSequence:
    #: requests carry sequence_id / sequence_start / sequence_end; the call gets ``sequence=``
    stateful = True

    def __call__(self, INPUT, sequence):  # noqa: N803 - Triton's tensor names
        return {"OUTPUT": (INPUT + np.int32(1 if sequence.start else 0)).astype(np.int32)}


def get_model(data_dir):
    return SimpleSequence()
