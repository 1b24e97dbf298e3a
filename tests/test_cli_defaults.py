"""Every command-line default is the library's own: read here from the library's signatures and
compared with what the parser gives (a change on either side, and not the other, fails)."""

import inspect

import pytest

from transferkit.cli import build_parser


def signature_defaults(function) -> dict:
    return {n: p.default for n, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def library_defaults(command: str) -> dict:
    """What each option of ``command`` must default to, from the library."""
    from transferkit import ClassifierHead, ImageFolder, TwoPhaseTrainer
    from transferkit.audit import audit
    from transferkit.tuning import TwoPhaseHyperModel, tune

    data, trainer = signature_defaults(ImageFolder), signature_defaults(TwoPhaseTrainer)
    head, fit = signature_defaults(ClassifierHead), signature_defaults(TwoPhaseTrainer.fit)
    data_options = {"image_size": tuple(data["image_size"]), "batch_size": data["batch_size"], "split": data["split"],
                    "seed": data["seed"]}
    backbone = {"backbone": trainer["backbone"], "weights": trainer["weights"]}
    if command == "train":
        return {**data_options, **backbone, **{k: trainer[k] for k in ("unfreeze_from", "learning_rate",
                                                                       "fine_tune_lr_factor", "ema_window", "views",
                                                                       "augmentation")},
                "dropout": head["dropout"], "hidden_units": head["hidden_units"],
                "epochs": fit["epochs"], "fine_tune_epochs": fit["fine_tune_epochs"]}
    if command == "tune":
        hypermodel, search = signature_defaults(TwoPhaseHyperModel), signature_defaults(tune)
        return {**data_options, **backbone, "epochs": hypermodel["epochs"],
                "fine_tune_epochs": hypermodel["fine_tune_epochs"], "metric": hypermodel["metric"],
                "tuner": search["tuner"], "max_trials": search["max_trials"], "project_name": search["project_name"],
                "soup": search["soup"]}
    if command == "evaluate":
        return {"seed": data["seed"], "fractions": data["split"], "batch_size": data["batch_size"]}
    if command == "audit":
        return {**data_options, **backbone, **{k: signature_defaults(audit)[k] for k in
                                               ("folds", "duplicate_threshold", "duplicate_margin", "outliers")}}
    raise KeyError(command)


ARGUMENTS = {"train": ["DATA"], "tune": ["DATA"], "evaluate": ["m.keras", "DATA"], "audit": ["DATA"]}


@pytest.mark.parametrize("command", sorted(ARGUMENTS))
def test_every_default_of_a_command_is_the_librarys(command):
    parsed = vars(build_parser().parse_args([command, *ARGUMENTS[command]]))
    expected = library_defaults(command)
    differing = {name: (parsed[name], value) for name, value in expected.items() if parsed[name] != value}
    assert not differing, f"{command}: (CLI, library) {differing}"


def test_the_comparison_sees_a_changed_default(monkeypatch):
    """A control: the library's default moved, the CLI's not (both read from one place, both move)."""
    from transferkit.training.settings import Recipe

    monkeypatch.setattr(Recipe, "learning_rate", 3e-4)  # what the CLI reads its default from
    parsed = vars(build_parser().parse_args(["train", "DATA"]))
    assert parsed["learning_rate"] == 3e-4 != library_defaults("train")["learning_rate"]  # the signature did not
