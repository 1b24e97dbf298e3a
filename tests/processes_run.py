"""Run by tests/test_processes.py, once per process of a job (or alone, as the one-process reference):
the same two-phase run on both paths with the JAX backend; each process saves its final weights,
validation accuracies and on how many devices its variables are held to OUT/process-<id>-of-<n>.npz, and
what it was given to work on to OUT/work-<path>-<id>-of-<n>.jsonl (tests/work_probe.py).

    python tests/processes_run.py OUT COORDINATOR NUM_PROCESSES PROCESS_ID
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from transferkit.training import distribute  # noqa: E402

out, coordinator, count, index = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
distribution = distribute.for_processes(coordinator, count, index)  # before the backend runs anything

import work_probe  # noqa: E402
from conftest import make_tree, tiny_trainer  # noqa: E402

from transferkit import ImageFolder  # noqa: E402

# every process reads the same files (on several machines: the same data set on each)
data = ImageFolder(make_tree(out / f"pets-{index}", {"cats": 16, "dogs": 16}), image_size=(32, 32), batch_size=8,
                   split=(0.5, 0.25, 0.25), seed=3)  # 16 training images: two batches of 8, 4 per process
saved = {"replicas": distribute.replicas(distribution), "processes": distribute.processes(distribution),
         "process_index": distribute.process_index()}
work_probe.install()
for path, cached in (("cached", True), ("exact", False)):
    work_probe.record_to(out / f"work-{path}-{index}-of-{count}.jsonl")
    trainer = tiny_trainer(backbone="test_cnn", backbone_options={}, unfreeze_from="block2", learning_rate=5e-2,
                           cache_features=cached, head={"dropout": 0.0}, distribution=distribution)
    result = trainer.fit(data, epochs=3, fine_tune_epochs=2, verbose=0)
    for i, weight in enumerate(trainer.model.weights):
        saved[f"{path}/weight{i}"] = np.asarray(weight)
    saved[f"{path}/variable_devices"] = np.asarray(work_probe.variable_devices(trainer.model))
    saved[f"{path}/val_accuracy"] = np.asarray(result.history["val_accuracy"])
    saved[f"{path}/predictions"] = result.classifier.predict(data.images("test"))
np.savez(out / f"process-{index}-of-{count}.npz", **saved)
print(f"process {index} of {count}: done")
