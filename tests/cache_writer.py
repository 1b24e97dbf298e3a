"""One of several processes that fill the same cache folder at once (run by test_features.py)."""

import sys
import time
from pathlib import Path

import conftest  # noqa: F401 - registers the "test_cnn" backbone

from transferkit import ImageFolder, TwoPhaseTrainer

if __name__ == "__main__":
    root, cache, go = map(Path, sys.argv[1:4])
    while not go.exists():
        time.sleep(0.01)
    data = ImageFolder(root, image_size=(32, 32), batch_size=4, split=(0.5, 0.5), seed=0, cache_dir=cache)
    trainer = TwoPhaseTrainer(backbone="test_cnn", weights=None, unfreeze_from="block2", seed=0, cache_dir=cache)
    trainer.fit(data, epochs=1, fine_tune_epochs=1, verbose=0)
    print("ok")
