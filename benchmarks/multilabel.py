"""Benchmark: several labels per image on real photos, against a per-class logistic regression.

    python benchmarks/multilabel.py --seeds 1 2 3          # builds the composites, trains, prints the table
    python benchmarks/multilabel.py --table                # the recorded runs

There is no multi-label photo set here, so one is made honestly from the shared cats-vs-dogs photos, each
photo used once: pictures of two photos side by side (cat+dog: labels ``cat;dog``; cat+cat: ``cat``;
dog+dog: ``dog``) and single photos stretched to the same 2:1 canvas (``cat`` or ``dog``). Training
composites come from the training photos, validation composites from the validation photos, and a third
set from the 400 web photos (never trained on, never used to choose anything). Every picture is squashed
to the trainer's square input, pairs and singles alike.

Each seed trains `TwoPhaseTrainer` (the library defaults, the shared ImageNet weights) on an `ImageTable`
of the composites read with ``label_separator=";"``: one sigmoid per class, thresholds chosen on the
validation composites. The baseline is a logistic regression per class (scikit-learn, C=1) on the frozen
backbone's pooled features of the unaugmented training composites, its thresholds chosen the same way.
Both are scored on the validation and the web composites: mAP, macro F1, micro F1 and exact match.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from two_phase import DATA, WEB, WEIGHTS

REPO = Path(__file__).resolve().parent.parent
SLOT = 192  # each photo's square on the 2:1 canvas
#: The share of each split's photos (per class) that stay single; the rest are paired, a third of each class's
#: pairs with its own class and the rest with the other class.
SINGLE_SHARE = 0.3
DEFAULT = "transferkit default"
BASELINE = "baseline: logistic regression per class on pooled features"


def _photos(folder: Path, name: str) -> list[Path]:
    return sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def _canvas(paths: list[Path]) -> Image.Image:
    canvas = Image.new("RGB", (2 * SLOT, SLOT))
    if len(paths) == 1:
        canvas.paste(Image.open(paths[0]).convert("RGB").resize((2 * SLOT, SLOT), Image.BILINEAR), (0, 0))
    else:
        for slot, path in enumerate(paths):
            canvas.paste(Image.open(path).convert("RGB").resize((SLOT, SLOT), Image.BILINEAR), (slot * SLOT, 0))
    return canvas


def compose(source: Path, out: Path, split: str, seed: int = 0) -> list[tuple[str, str, str]]:
    """Write the composites of ``source``'s cats/ and dogs/ photos into ``out/split``; (path, labels, split)
    rows, paths relative to ``out``."""
    rng = np.random.default_rng(seed)
    cats, dogs = (list(rng.permutation(_photos(source, name))) for name in ("cats", "dogs"))
    pictures = []
    for own, label in ((cats, "cat"), (dogs, "dog")):
        singles = int(round(SINGLE_SHARE * len(own)))
        pictures += [([own.pop()], label) for _ in range(singles)]
        same = len(own) // 3 // 2
        pictures += [([own.pop(), own.pop()], label) for _ in range(same)]
    while cats and dogs:
        pair = [cats.pop(), dogs.pop()]
        pictures.append((pair if rng.random() < 0.5 else pair[::-1], "cat;dog"))
    pictures += [([p], "cat") for p in cats] + [([p], "dog") for p in dogs]  # what pairing left over
    (out / split).mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (paths, labels) in enumerate(pictures):
        name = f"{split}/{i:05d}.jpg"
        if not (out / name).exists():
            _canvas(paths).save(out / name, quality=92)
        rows.append((name, labels, split))
    return rows


def build(work: Path) -> tuple[Path, Path]:
    """The training table (train and validation composites) and the web table, made once."""
    table, web_table = work / "labels.csv", work / "web.csv"
    if not (table.exists() and web_table.exists()):
        rows = compose(DATA / "train", work, "train") + compose(DATA / "validation", work, "validation")
        table.write_text("path,labels,split\n" + "".join(f"{p},{labels},{s}\n" for p, labels, s in rows))
        web = compose(WEB, work, "web")
        web_table.write_text("path,labels\n" + "".join(f"{p},{labels}\n" for p, labels, _ in web))
    return table, web_table


def _web(work: Path, class_names) -> tuple[list[Path], np.ndarray]:
    lines = (work / "web.csv").read_text().splitlines()[1:]
    files = [work / line.split(",")[0] for line in lines]
    labels = np.array([[name in line.split(",")[1].split(";") for name in class_names] for line in lines])
    return files, labels


def _scores(evaluation) -> dict:
    return {"map": evaluation.mean_average_precision, "macro_f1": evaluation.macro_f1,
            "micro_f1": evaluation.micro_f1, "exact_match": evaluation.accuracy}


def train_and_score(work: Path, seed: int) -> dict:
    from transferkit import ImageTable, TwoPhaseTrainer
    from transferkit.evaluation.metrics import evaluate
    from transferkit.evaluation.multilabel import MultiLabelEvaluation

    data = ImageTable(work / "labels.csv", label_column="labels", label_separator=";", seed=seed)
    start = time.perf_counter()
    result = TwoPhaseTrainer(weights=str(WEIGHTS), seed=seed).fit(data, verbose=2)
    seconds = time.perf_counter() - start
    classifier = result.classifier
    files, labels = _web(work, data.class_names)
    web = MultiLabelEvaluation(data.class_names, labels, classifier.predict(files), thresholds=classifier.thresholds)
    return {"model": DEFAULT, "seed": seed, "seconds": seconds, "thresholds": classifier.thresholds,
            "validation": _scores(evaluate(classifier, data, split="validation")), "web": _scores(web),
            "counts": data.report.counts}


def baseline(work: Path) -> dict:
    """Per-class logistic regression on the frozen backbone's pooled features (no augmentation, no seed)."""
    import keras
    from sklearn.linear_model import LogisticRegression

    from transferkit import ImageTable
    from transferkit.evaluation.multilabel import MultiLabelEvaluation
    from transferkit.models.thresholds import choose_thresholds

    data = ImageTable(work / "labels.csv", label_column="labels", label_separator=";")
    start = time.perf_counter()
    backbone = keras.applications.MobileNetV2(include_top=False, weights=str(WEIGHTS), pooling="avg",
                                              input_shape=(*data.image_size, 3))

    def features(images):
        pixels = keras.applications.mobilenet_v2.preprocess_input(np.asarray(images, dtype="float32"))
        return backbone.predict(pixels, batch_size=32, verbose=0)

    files, web_labels = _web(work, data.class_names)
    from transferkit.data.images import read_image

    x = {split: features(data.images(split)) for split in ("train", "validation")}
    x["web"] = features(np.stack([read_image(f, data.image_size) for f in files]))
    y = {"train": data.labels("train"), "validation": data.labels("validation"), "web": web_labels.astype(int)}
    models = [LogisticRegression(C=1.0, max_iter=2000).fit(x["train"], y["train"][:, c])
              for c in range(len(data.class_names))]
    probabilities = {s: np.stack([m.predict_proba(x[s])[:, 1] for m in models], axis=1) for s in ("validation", "web")}
    thresholds = choose_thresholds(y["validation"], probabilities["validation"])
    scored = {s: _scores(MultiLabelEvaluation(data.class_names, y[s], probabilities[s], thresholds=thresholds))
              for s in ("validation", "web")}
    return {"model": BASELINE, "seed": None,
            "seconds": time.perf_counter() - start, "thresholds": thresholds, **scored}


def table(results: list[dict]) -> str:
    lines = ["| model | seed | validation mAP | macro F1 | micro F1 | exact match | web mAP | macro F1 | micro F1 | "
             "exact match | time |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        cells = [f"{100 * r[s][k]:.2f}" for s in ("validation", "web") for k in ("map", "macro_f1", "micro_f1",
                                                                                   "exact_match")]
        lines.append(f"| {r['model']} | {r['seed'] if r['seed'] is not None else '-'} | " + " | ".join(cells)
                     + f" | {r['seconds']:.0f} s |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3])
    p.add_argument("--work-dir", default="/tmp/transferkit-multilabel", help="where the composites are written")
    p.add_argument("--results", default=str(REPO / "benchmarks" / "results" / "multilabel.jsonl"))
    p.add_argument("--table", action="store_true", help="print the recorded runs and stop")
    args = p.parse_args()
    results_file = Path(args.results)
    recorded = [json.loads(line) for line in results_file.read_text().splitlines()] if results_file.exists() else []
    if not args.table:
        work = Path(args.work_dir)
        build(work)
        done = {(r["model"], r["seed"]) for r in recorded}
        for seed in [None, *args.seeds]:
            if ((BASELINE if seed is None else DEFAULT), seed) in done:
                continue
            record = baseline(work) if seed is None else train_and_score(work, seed)
            record["date"] = time.strftime("%Y-%m-%d")
            recorded.append(record)
            results_file.parent.mkdir(parents=True, exist_ok=True)
            with results_file.open("a") as handle:
                handle.write(json.dumps(record) + "\n")
            print(table([record]), flush=True)
    print(table(recorded))


if __name__ == "__main__":
    main()
