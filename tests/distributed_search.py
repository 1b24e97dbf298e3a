"""One process of a distributed search (chief or worker, from KERASTUNER_TUNER_ID); used by test_tuning.

    python distributed_search.py DATA_DIR SEARCH_DIR LOG_DIR

Workers append {"tuner_id", "trial_id", "score"} per trial they ran to LOG_DIR/ran-<id>.jsonl; the chief
prints the best trial as JSON on its last line.
"""

import json
import os
import sys
from pathlib import Path

import keras_tuner as kt

from transferkit import ImageFolder
from transferkit.tuning import tune

tuner_id = os.environ["KERASTUNER_TUNER_ID"]
log_dir = sys.argv[3]


class LoggedRandomSearch(kt.RandomSearch):
    def run_trial(self, trial, *args, **kwargs):
        results = super().run_trial(trial, *args, **kwargs)
        score = results[0]["final_val_accuracy"]
        with open(Path(log_dir) / f"ran-{tuner_id}.jsonl", "a") as log:
            log.write(json.dumps({"tuner_id": tuner_id, "trial_id": trial.trial_id, "score": score}) + "\n")
        return results


def main():
    data_dir, search_dir = sys.argv[1:3]
    data = ImageFolder(data_dir, image_size=(32, 32), batch_size=8, split=(0.5, 0.25, 0.25), seed=3)
    result = tune(data, search_dir, project_name="dist", tuner=LoggedRandomSearch, max_trials=4, verbose=0,
                  output=Path(search_dir) / "results", weights=None, backbone_options={"alpha": 0.35},
                  epochs=1, fine_tune_epochs=1, augmentation=None, seed=1)
    if "chief" in tuner_id:
        best = result.trials[0]
        print(json.dumps({"best_trial": best["trial_id"], "best_score": best["score"]}))


if __name__ == "__main__":  # trial processes are spawned and import this file: run only in the parent
    main()
