"""Box helpers customize_service.py imports as a sibling module (the seed's yolov3_utils.py)."""
import numpy as np


def top_k_boxes(boxes, scores, height, width, k):
    """The k best boxes, rescaled from [0, 1] to pixels of a height x width image."""
    keep = np.argsort(-scores, kind="stable")[:k]
    scale = np.array([height, width, height, width], dtype=np.float32)
    return boxes[keep] * scale, scores[keep]
