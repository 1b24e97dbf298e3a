"""Exports that convert through TensorFlow (SavedModel, TFLite, ONNX), made from the JAX or PyTorch
backend: the model goes, as its backend-agnostic ``.keras`` file, to a Python process on the
TensorFlow backend, which exports it. One process per export; TensorFlow must be installed.

>>> TENSORFLOW_FORMATS
('savedmodel', 'tflite', 'onnx')
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from transferkit.data.pipeline import has_tensorflow

__all__ = ["TENSORFLOW_FORMATS", "export_on_tensorflow"]

TENSORFLOW_FORMATS = ("savedmodel", "tflite", "onnx")

#: What the process on the TensorFlow backend runs: the request (JSON) is its first argument.
_EXPORT = """
import json, sys
import numpy as np
from transferkit.export.formats import export
from transferkit.models.classifier import load_model
request = json.loads(sys.argv[1])
representative = request.pop("representative", None)
export(load_model(request.pop("model")), request.pop("path"), format=request.pop("format"),
       representative_images=None if representative is None else np.load(representative), **request)
"""


def export_on_tensorflow(classifier, path: Path, format: str, representative_images=None, **options) -> Path:
    """`transferkit.export.export` run in a process on the TensorFlow backend; returns ``path``."""
    if not has_tensorflow():
        raise ImportError(f"Export to {format} converts through TensorFlow, which is not installed here: "
                          'pip install "transferkit[tensorflow]" (the .keras file works on every backend, '
                          "and can be exported on a machine that has TensorFlow).")
    with tempfile.TemporaryDirectory(prefix="transferkit-export-") as tmp:
        model = classifier.save(Path(tmp) / "model.keras")
        request = {"model": str(model), "path": str(Path(path).absolute()), "format": format, **options}
        if representative_images is not None:
            np.save(Path(tmp) / "representative.npy", np.asarray(representative_images))
            request["representative"] = str(Path(tmp) / "representative.npy")
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": os.environ.get(
            "TF_CPP_MIN_LOG_LEVEL", "2")}
        done = subprocess.run([sys.executable, "-c", _EXPORT, json.dumps(request)], env=env, capture_output=True,
                              text=True)
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise RuntimeError(f"Export to {format} on the TensorFlow backend failed: {lines[-1] if lines else 'no output'}"
                           f" (exit status {done.returncode}).")
    return Path(path)
