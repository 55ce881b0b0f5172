"""The report's way, for comparison only: a synchronous endpoint that classifies one uploaded image per request."""
from __future__ import annotations

import os

import torch
from flask import Flask, jsonify, request

from shared.settings import load_settings
from worker.inference import Classifier

torch.set_num_threads(int(os.environ.get("PIXELPROOF_TORCH_THREADS", "1")) or 1)
classifier = Classifier(os.environ["PIXELPROOF_MODEL_PATH"], "cpu", batch_size=1, decode_threads=1,
                        precision=load_settings().precision)
app = Flask(__name__)


@app.post("/classify")
def classify():
    data = request.files["file"].read()
    outcome = classifier.classify([lambda: data])[0]
    return jsonify({"p_fake": outcome.p_fake, "label": outcome.label, "error": outcome.error})
