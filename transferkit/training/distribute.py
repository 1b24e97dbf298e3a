"""Several devices: a ``tf.distribute`` strategy on TensorFlow, a Keras distribution
(``keras.distribution.DataParallel``) on JAX, and the frozen features computed across its devices.

The trainer takes one as ``TwoPhaseTrainer(distribution=...)``; `for_devices` makes the usual one
(`MirroredStrategy` or `DataParallel`) for a number of devices of the running backend, and
`for_processes` joins a job of several processes (machines) on JAX and spans all their devices.

>>> import contextlib
>>> isinstance(scope(None), contextlib.nullcontext), replicas(None)
(True, 1)
"""

from __future__ import annotations

import contextlib
import os

import keras
import numpy as np

from transferkit.data.pipeline import ArrayBatches

__all__ = ["check", "scope", "replicas", "processes", "process_index", "gpu_visible", "for_devices", "for_processes",
           "logical_cpu_devices", "even_batches", "extractor"]

PROCESS_VARIABLES = ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_NUM_PROCESSES",
                     "KERAS_DISTRIBUTION_PROCESS_ID")


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


def processes(distribution) -> int:
    """How many processes (machines, or one process per GPU) train together under ``distribution``."""
    if distribution is None or _is_strategy(distribution):
        return 1
    return int(getattr(distribution, "num_processes", 1))


def process_index() -> int:
    """This process's place in a job of several (0, the coordinator, where there is one process)."""
    if keras.backend.backend() != "jax":
        return 0
    import jax

    return int(jax.process_index())


def gpu_visible() -> bool:
    """Whether the running backend sees a GPU (listing devices does not start TensorFlow's runtime)."""
    if keras.backend.backend() == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    if keras.backend.backend() == "torch":
        import torch

        return bool(torch.cuda.is_available())
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


def for_processes(coordinator: str | None = None, num_processes: int | None = None,
                  process_id: int | None = None):
    """Join a job of ``num_processes`` processes (one per machine, or per GPU) and return a
    ``keras.distribution.DataParallel`` over every device of every process. JAX only, called in
    every process before the backend runs anything.

    ``coordinator`` is ``HOST:PORT`` of process 0, which every process can reach. Arguments left out
    are read from ``KERAS_DISTRIBUTION_JOB_ADDRESSES``, ``KERAS_DISTRIBUTION_NUM_PROCESSES`` and
    ``KERAS_DISTRIBUTION_PROCESS_ID`` (as ``keras.distribution.initialize`` does). Every process must
    train with the same seed and settings on the same files; each reads its share of every batch.
    """
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(f"Several processes need the JAX backend (KERAS_BACKEND=jax), not {backend!r}: Keras 3's "
                         "fit does not run under TensorFlow's MultiWorkerMirroredStrategy (keras-team/keras#20585).")
    names = dict(zip(("coordinator", "num_processes", "process_id"), PROCESS_VARIABLES))
    given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    for key, variable in names.items():
        if given[key] is None and os.environ.get(variable):
            given[key] = os.environ[variable]
    missing = [f"{key} (or {names[key]})" for key, value in given.items() if value is None]
    if missing:
        raise ValueError(f"Several processes need {', '.join(missing)}.")
    try:
        count, index = int(given["num_processes"]), int(given["process_id"])
    except ValueError:
        raise ValueError(f"num_processes={given['num_processes']!r}, process_id={given['process_id']!r}: give "
                         "whole numbers.") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"process_id={index} of num_processes={count}: give 0 <= process_id < num_processes.")
    host, _, port = str(given["coordinator"]).split(",")[0].rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"coordinator={given['coordinator']!r}: give HOST:PORT of process 0, e.g. 10.0.0.1:12345.")
    import jax

    if count > 1:
        keras.distribution.initialize(str(given["coordinator"]), count, index)
    return keras.distribution.DataParallel(devices=jax.devices())


def even_batches(dataset, distribution, batch_size: int | None = None):
    """``dataset`` (batches of ``batch_size``) as the distribution can split it: with several
    processes, every batch must split evenly between them, so a last, smaller batch is left out
    (``drop_remainder``); unchanged otherwise."""
    count = processes(distribution)
    if dataset is None or count == 1:
        return dataset
    if isinstance(dataset, ArrayBatches):  # no tf.data to shard: each process takes its part of every batch
        distribution.auto_shard_dataset = False
        return dataset.shard(process_index(), count)
    if batch_size is None:
        from tensorflow.python.data.experimental.ops.distribute import compute_batch_size

        batch_size = int(compute_batch_size(dataset).numpy())
        if batch_size < 1:
            raise ValueError("Several processes need datasets of a known batch size: batch them with "
                             "dataset.batch(n, drop_remainder=True).")
    if batch_size % count:
        raise ValueError(f"Batches of {batch_size} do not split evenly over {count} processes: give a batch size "
                         f"that is a multiple of {count}.")
    return dataset.rebatch(batch_size, drop_remainder=True)


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

    share = processes(distribution)

    def run(batch):  # JAX shards the batch axis evenly: pad to a multiple of the devices, then trim
        batch = np.asarray(batch)
        padded = -len(batch) % count
        if padded:
            batch = np.concatenate([batch, np.zeros((padded, *batch.shape[1:]), batch.dtype)])
        if share > 1:  # each process runs its rows of the batch; all of them get every row back
            batch = np.array_split(batch, share)[process_index()]
        with distribution.scope():
            values = model.predict_on_batch(batch)
        values = values if isinstance(values, (list, tuple)) else [values]
        if share > 1:
            from jax.experimental import multihost_utils

            values = [multihost_utils.process_allgather(v, tiled=True) for v in values]
        return [np.asarray(v)[: len(v) - padded] for v in values]

    return run
