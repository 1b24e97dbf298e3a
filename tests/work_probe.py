"""What each device or process was given to work on, seen from inside a distributed run (for
tests/devices_run.py and tests/processes_run.py): `install()` once before training, `record_to(path)`
before each run, `read(path)` after; `variable_devices(model)` says where the trained variables are held.

- TensorFlow (``tf.distribute``): every replica's ``train_step`` writes one line per step at run time:
  the model, the optimizer's step, the replica, its batch size and each of its samples' pixel sum.
- JAX (``keras.distribution``): every batch that Keras hands to the distribution is recorded as it
  arrives from this process (its samples' sums) and as it leaves (the global batch's size, and each
  device's shard: device id, size and the sums of its samples).

A run that ignores the distribution leaves one replica's full batches (TensorFlow) or nothing at all
(JAX), so the tests can tell "distributed" from "not distributed", not only "right" from "wrong".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _sums(x) -> list[float]:
    x = np.asarray(x, dtype=np.float64)
    return x.reshape(len(x), -1).sum(axis=1).tolist()


_target: list[Path] = []


def record_to(path: Path) -> None:
    """Where the runs from now on write (a TensorFlow model reads it when its step is traced)."""
    _target[:] = [Path(path)]


def install() -> None:
    import keras

    if keras.backend.backend() == "tensorflow":
        _install_tensorflow()
    elif keras.backend.backend() == "jax":
        _install_jax()


def _install_tensorflow() -> None:
    import keras
    import tensorflow as tf

    original = keras.Model.train_step

    def train_step(self, data):
        x = data[0] if isinstance(data, (tuple, list)) else data
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        sums = tf.reduce_sum(tf.reshape(tf.cast(x, tf.float64), (tf.shape(x)[0], -1)), axis=1)
        key = f"{self.name}/{id(self.optimizer)}"  # one optimizer per phase: steps count from 0 in each
        tf.print(key, self.optimizer.iterations, replica, tf.shape(x)[0], sums, summarize=-1, sep="\t",
                 output_stream=f"file://{_target[0]}")
        return original(self, data)

    keras.Model.train_step = train_step


def _install_jax() -> None:
    import jax
    from keras.src.backend.jax import trainer

    original = trainer._distribute_data

    def distribute_data(data, layouts=None):
        out = original(data, layouts)
        local = data[0] if isinstance(data, (tuple, list)) else data
        sent = out[0] if isinstance(out, (tuple, list)) else out
        shards = [{"device": shard.device.id, "size": int(shard.data.shape[0]), "sums": _sums(shard.data)}
                  for shard in sent.addressable_shards]
        record = {"process": jax.process_index(), "local": _sums(local), "global_size": int(sent.shape[0]),
                  "shards": sorted(shards, key=lambda s: s["device"])}
        with open(_target[0], "a") as f:
            f.write(json.dumps(record) + "\n")
        return out

    trainer._distribute_data = distribute_data


def variable_devices(model) -> list[int]:
    """On how many devices ``model``'s trainable variables are held (the distinct counts, sorted): a copy on
    each device when mirrored (TensorFlow) or replicated (JAX); -1 for a JAX variable split across devices."""

    def held(value) -> int:
        if hasattr(value, "values"):  # tf.distribute's MirroredVariable
            return len({v.device for v in value.values})
        if hasattr(value, "sharding"):
            return len(value.sharding.device_set) if value.sharding.is_fully_replicated else -1
        return 1

    return sorted({held(v.value) for v in model.trainable_variables})


def read(path: Path) -> list:
    """The records in order: dicts (JAX), or ``(step key, replica, batch size, sums)`` tuples (TensorFlow)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))
        elif line.strip():
            key, step, replica, size, sums = line.split("\t")
            records.append((f"{key}/{step}", int(replica), int(size),
                            [float(v) for v in sums.strip("[]").split()]))
    return records
