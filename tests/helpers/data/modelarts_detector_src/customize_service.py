# -*- coding: utf-8 -*-
"""A frozen-graph detector moved into a ModelArts model folder (the seed's yolov3 demo.py, shrunk).

ModelArts creates ``DetectorService(model_name, model_path)`` once, then runs
``_preprocess -> _inference -> _postprocess`` for each request. Parameters that demo.py took as
flags come from environment variables set at deployment.
"""
import io
import os

import numpy as np
import tensorflow as tf
from PIL import Image

from model_service.tfserving_model_service import TfServingBaseService

from detector_utils import top_k_boxes

MODEL_FILENAME = os.environ.get("MODEL_FILENAME", "frozen_detector.pb")
INPUT_SIZE = int(os.environ.get("INPUT_SIZE", "64"))
TOP_K = int(os.environ.get("DETECTOR_TOP_K", "3"))


class DetectorService(TfServingBaseService):
    def __init__(self, model_name, model_path):
        self.model_name = model_name
        self.model_path = model_path
        graph_def = tf.compat.v1.GraphDef()
        with open(os.path.join(model_path, MODEL_FILENAME), "rb") as f:
            graph_def.ParseFromString(f.read())
        self.graph = tf.Graph()
        with self.graph.as_default():
            tf.compat.v1.import_graph_def(graph_def, name="")
        self.sess = tf.compat.v1.Session(graph=self.graph, config=tf.compat.v1.ConfigProto())
        self.input_image = self.graph.get_tensor_by_name("input_image:0")
        self.boxes = self.graph.get_tensor_by_name("detection_boxes:0")
        self.scores = self.graph.get_tensor_by_name("detection_scores:0")

    def _preprocess(self, data):
        names, sizes, batch = [], [], []
        for _field, files in data.items():
            for file_name, file_content in files.items():
                image = Image.open(file_content).convert("RGB")
                sizes.append((image.height, image.width))
                resized = image.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
                batch.append(np.asarray(resized, dtype=np.float32) / 255.0)
                names.append(file_name)
        return {"names": names, "sizes": sizes, "images": np.stack(batch)}

    def _inference(self, data):
        boxes, scores = self.sess.run([self.boxes, self.scores], feed_dict={self.input_image: data["images"]})
        return {"names": data["names"], "sizes": data["sizes"], "boxes": boxes, "scores": scores}

    def _postprocess(self, data):
        result = {}
        rows = zip(data["names"], data["sizes"], data["boxes"], data["scores"])
        for name, (height, width), boxes, scores in rows:
            boxes, scores = top_k_boxes(boxes, scores, height, width, TOP_K)
            result[name] = {
                "detection_boxes": boxes.tolist(),
                "detection_scores": scores.tolist(),
                "image_size": [height, width],
            }
        return result
