"""The package's dependencies, which pyproject.toml declares dynamic.

TensorFlow is a dependency, as a plain ``pip install .`` and ``make demo`` need on CPU, unless
``TRANSFERKIT_WITHOUT_TENSORFLOW=1`` is set while pip builds the package: then the JAX or PyTorch
backend is the user's, from the ``jax`` or ``torch`` extra, e.g.
``TRANSFERKIT_WITHOUT_TENSORFLOW=1 pip install ".[jax]"`` (docs/howto/platforms.md).
"""

import os

from setuptools import setup

CORE = [
    "keras>=3.5",
    "keras-tuner[bayesian]>=1.4,<1.5",  # transferkit/tuning/trial_runner.py uses its private API (checked at run time)
    "tensorboard",  # keras-tuner's trials import it; tensorflow no longer pulls it in (it does not need TensorFlow)
    "six",  # keras-tuner imports it without declaring it (TensorFlow's dependencies used to bring it)
    "numpy>=1.24",
    "matplotlib>=3.7",
    "pillow>=9.1",
    "h5py",  # .h5 weight files (Keras reads them with it)
]
TENSORFLOW = ["tensorflow>=2.16"]  # CPU everywhere; the and-cuda extra adds NVIDIA's libraries on Linux

without_tensorflow = os.environ.get("TRANSFERKIT_WITHOUT_TENSORFLOW", "").strip().lower() in ("1", "true", "yes")
setup(install_requires=CORE if without_tensorflow else CORE + TENSORFLOW)
