"""A small batchable image model for the v2 model configuration and statistics tests: the shape
Triton's image_client.py expects (one NHWC image input with a batch dim, one FP32 vector output)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers.packages import pack_code

IMAGE_MAIN = """
    import numpy as np

    def get_model(data_dir):
        def classify(image):
            flat = image.reshape(image.shape[0], -1)
            return {"scores": np.stack([flat.mean(axis=1), flat.max(axis=1), flat.min(axis=1),
                                        flat.sum(axis=1)], axis=1).astype(np.float32)}
        return classify
"""


def pack_image(path: Path, name: str = "image") -> Path:
    """A batchable image model: image float32 (batch, 8, 8, 3) -> scores float32 (batch, 4)."""
    image = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    flat = image.reshape(2, -1)
    scores = np.stack([flat.mean(1), flat.max(1), flat.min(1), flat.sum(1)], axis=1).astype(np.float32)
    return pack_code(path, name, IMAGE_MAIN, [{"name": "image", "dtype": "float32", "shape": ("batch", 8, 8, 3)}],
                     [{"name": "scores", "dtype": "float32", "shape": ("batch", 4)}], {"image": image},
                     {"scores": scores})
