"""Several devices of one machine: a ``tf.distribute`` strategy on TensorFlow, a Keras distribution
(``keras.distribution.DataParallel``) on JAX, and the frozen features computed across its devices.

The trainer takes one as ``TwoPhaseTrainer(distribution=...)``; `for_devices` makes the usual one
(`MirroredStrategy` or `DataParallel`) for a number of devices of the running backend.

>>> import contextlib
>>> isinstance(scope(None), contextlib.nullcontext), replicas(None)
(True, 1)
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np

__all__ = ["check", "scope", "replicas", "gpu_visible", "for_devices", "logical_cpu_devices", "extractor"]


def _is_strategy(distribution) -> bool:
    return type(distribution).__module__.startswith("tensorflow") and hasattr(distribution, "num_replicas_in_sync")


def _is_keras_distribution(distribution) -> bool:
    """A ``keras.distribution`` object (`DataParallel`, `ModelParallel`); Keras exports no base class."""
    return all(hasattr(distribution, name) for name in ("device_mesh", "distribute_dataset", "scope"))


def check(distribution) -> None:
    """Fail early, saying what to pass instead, when ``distribution`` does not fit the backend."""
    if distribution is None:
        return
    backend = keras.backend.backend()
    if _is_strategy(distribution):
        if backend != "tensorflow":
            raise ValueError(f"A tf.distribute strategy needs the TensorFlow backend, not {backend!r}; on JAX pass "
                             "keras.distribution.DataParallel(...).")
        return
    if _is_keras_distribution(distribution):
        if backend != "jax":
            raise ValueError(f"keras.distribution.{type(distribution).__name__} needs the JAX backend, not "
                             f"{backend!r}; on TensorFlow pass tf.distribute.MirroredStrategy(...).")
        return
    raise TypeError(f"distribution={distribution!r}: pass a tf.distribute strategy (TensorFlow) or a "
                    "keras.distribution.Distribution (JAX), or None.")


def scope(distribution):
    """The context in which variables, models and optimizers are made for ``distribution``."""
    if distribution is None:
        return contextlib.nullcontext()
    return distribution.scope()


def replicas(distribution) -> int:
    """How many devices share each batch."""
    if distribution is None:
        return 1
    if _is_strategy(distribution):
        return int(distribution.num_replicas_in_sync)
    return int(np.prod(distribution.device_mesh.shape))


def gpu_visible() -> bool:
    """Whether the running backend sees a GPU (listing devices does not start TensorFlow's runtime)."""
    if keras.backend.backend() == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def logical_cpu_devices(count: int) -> None:
    """Split TensorFlow's CPU into ``count`` logical devices (for tests and trying things out: they
    share the same cores). Must run before TensorFlow runs anything."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)


def for_devices(count: int | str = "all"):
    """A data-parallel distribution over ``count`` devices (``"all"``: every one) of the running
    backend: GPUs where there are any, else CPU devices. None for a single device."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        kind = "GPU" if tf.config.list_logical_devices("GPU") else "CPU"
        names = [d.name for d in tf.config.list_logical_devices(kind)]
    elif backend == "jax":
        import jax

        names = jax.devices()
    else:
        raise ValueError(f"Several devices are supported on TensorFlow and JAX, not on {backend!r}.")
    wanted = len(names) if count == "all" else int(count)
    if not 1 <= wanted <= len(names):
        raise ValueError(f"{count} devices asked for; {len(names)} available.")
    if wanted == 1:
        return None
    if backend == "tensorflow":
        return tf.distribute.MirroredStrategy(names[:wanted])
    return keras.distribution.DataParallel(devices=names[:wanted])


def extractor(model: keras.Model, distribution):
    """``run(batch) -> [arrays]``: ``model``'s outputs for a NumPy batch, the batch split over the
    distribution's devices and the outputs put back in order."""
    if distribution is None or replicas(distribution) == 1:
        def run(batch):
            values = model.predict_on_batch(batch)
            return [np.asarray(v) for v in (values if isinstance(values, (list, tuple)) else [values])]

        return run
    count = replicas(distribution)
    if _is_strategy(distribution):
        import tensorflow as tf

        step = tf.function(lambda x: model(x, training=False), reduce_retracing=True)

        def run(batch):
            parts = np.array_split(np.asarray(batch), count)  # contiguous: replica order is row order
            values = distribution.experimental_distribute_values_from_function(
                lambda context: tf.constant(parts[context.replica_id_in_sync_group]))
            outputs = distribution.run(step, args=(values,))
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            return [np.concatenate([np.asarray(v) for v in distribution.experimental_local_results(o)])
                    for o in outputs]

        return run

    def run(batch):  # JAX shards the batch axis evenly: pad to a multiple of the devices, then trim
        batch = np.asarray(batch)
        padded = -len(batch) % count
        if padded:
            batch = np.concatenate([batch, np.zeros((padded, *batch.shape[1:]), batch.dtype)])
        with distribution.scope():
            values = model.predict_on_batch(batch)
        values = values if isinstance(values, (list, tuple)) else [values]
        return [np.asarray(v)[: len(batch) - padded] for v in values]

    return run
