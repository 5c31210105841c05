"""A two-layer numpy MLP: ``y = relu(x @ W1) @ W2`` with the weights stored as .npy data files.

``get_model(data_dir)`` loads ``w1.npy`` (256x1024) and ``w2.npy`` (1024x10) from the package's
data folder and returns the callable modelpod runs with the inputs as keyword arguments.
"""

import os

import numpy as np


def get_model(data_dir):
    w1 = np.load(os.path.join(data_dir, "w1.npy"))
    w2 = np.load(os.path.join(data_dir, "w2.npy"))

    def mlp(x):
        hidden = np.maximum(x @ w1, 0.0)
        return {"y": (hidden @ w2).astype(np.float32)}

    return mlp
