"""One process of a distributed search (chief or worker, from KERASTUNER_TUNER_ID); used by test_tuning.

    python distributed_search.py DATA_DIR SEARCH_DIR LOG_DIR

Workers append {"tuner_id", "trial_id", "score", "last_step"} per trial they ran to
LOG_DIR/ran-<id>.jsonl; the chief prints the best trial as JSON on its last line. The chief's oracle
(only the chief's: the rule is replaced in this process alone) stops every odd-numbered trial after
its first epoch, so the workers must obey the oracle's decision for those and train the others whole.
"""

import json
import os
import sys
from pathlib import Path

from transferkit import ImageFolder
from transferkit.tuning import TwoPhaseTuner, tune
from transferkit.tuning.oracles import MedianStopping

tuner_id = os.environ["KERASTUNER_TUNER_ID"]
log_dir = sys.argv[3]


class LoggedTuner(TwoPhaseTuner):
    def run_trial(self, trial, *args, **kwargs):
        results = super().run_trial(trial, *args, **kwargs)
        row = {"tuner_id": tuner_id, "trial_id": trial.trial_id, "score": results[0]["final_val_accuracy"],
               "last_step": results[0]["last_step"]}
        with open(Path(log_dir) / f"ran-{tuner_id}.jsonl", "a") as log:
            log.write(json.dumps(row) + "\n")
        return results


def main():
    data_dir, search_dir = sys.argv[1:3]
    if "chief" in tuner_id:  # the rule, decided where the oracle lives
        MedianStopping.below_median = lambda self, trial_id, step, logs: int(trial_id) % 2 == 1
    data = ImageFolder(data_dir, image_size=(32, 32), batch_size=8, split=(0.5, 0.25, 0.25), seed=3)
    result = tune(data, search_dir, project_name="dist", tuner="random", tuner_class=LoggedTuner, max_trials=4,
                  verbose=0, stop_below_median_after=0,
                  output=Path(search_dir) / "results", weights=None, backbone_options={"alpha": 0.35},
                  epochs=1, fine_tune_epochs=1, augmentation=None, seed=1)
    if "chief" in tuner_id:
        best = result.trials[0]
        print(json.dumps({"best_trial": best["trial_id"], "best_score": best["score"]}))


if __name__ == "__main__":  # trial processes are spawned and import this file: run only in the parent
    main()
