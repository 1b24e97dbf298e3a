"""The search's defaults, in one place that loads neither Keras nor KerasTuner (the command line reads
them before TensorFlow starts).

>>> TRIAL_EPOCHS + TRIAL_FINE_TUNE_EPOCHS
6
"""

TUNER = "random"
MAX_TRIALS = 10
#: Phase-1 and phase-2 epochs of each trial.
TRIAL_EPOCHS = 3
TRIAL_FINE_TUNE_EPOCHS = 3
METRIC = "val_accuracy"
#: The score of a search on several labels per image: validation mAP (mean average precision).
MULTI_LABEL_METRIC = "val_map"
PROJECT_NAME = "transferkit"
DROPOUT_RANGE = (0.0, 0.5)
HIDDEN_UNITS = (0, 128, 256)
LEARNING_RATE_RANGE = (3e-5, 3e-3)
FINE_TUNE_LR_FACTORS = (0.01, 0.03, 0.1, 0.3)
