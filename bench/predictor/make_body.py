"""Writes one OIP v2 infer request (JSON) for a model: one random sample.

Usage: make_body.py MODEL_DIR OUT_FILE
"""

import json
import sys

import numpy as np

card = json.load(open(f"{sys.argv[1]}/model.json"))
shape = [1] + card["signature"]["inputShape"]
data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
body = {"id": "bench", "inputs": [{"name": "input", "shape": shape, "datatype": "FP32",
                                   "data": [round(float(x), 5) for x in data.ravel()]}]}
json.dump(body, open(sys.argv[2], "w"))
