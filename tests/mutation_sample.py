"""Mutation testing of the training, export and audit paths (the modules in ``MODULES``) on the unit tier,
with mutmut 3 (settings: ``[tool.mutmut]`` in pyproject.toml), over a seeded random sample of the
mutants: all of them would take days on 2 cores, since most run a real training. The score of a uniform
sample estimates the whole; the interval printed is a 95% Wilson interval. Mutants that only the slower
tiers reach (code run in other processes: several devices or processes) show as "no tests" and are
judged by hand against those tiers (tests/README.md). Modules of Keras layers (``models/head.py``,
``models/augment.py``) are left out: mutmut's trampolines replace ``__init__`` by ``(*args, **kwargs)``, and
Keras reads a layer's ``__init__`` signature when it makes one, so every test that builds a head fails.

    python tests/mutation_sample.py                  # `make mutation`: 2 per module, seed 1
    python tests/mutation_sample.py --per-module 6 --seed 0      # the first sample's draw (fewer modules then)
    python tests/mutation_sample.py --names transferkit.data.pipeline.x_pass_rng__mutmut_1 ...   # rerun some

Prints one line per module and writes ``mutants/sample.json`` (each sampled mutant and its status);
``mutmut show NAME`` prints a mutant's diff. Not part of ``make test``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import subprocess
import sys
from pathlib import Path

MODULES = ("training/trainer", "training/features", "training/recipes", "training/checkpoint",
           "training/callbacks", "training/distribute", "training/settings", "training/warm_start",
           "training/lr_find", "models/classifier",
           "models/inference", "export/formats", "export/parity", "export/runtimes",
           "export/tflite_metadata", "audit/checks", "evaluation/metrics", "evaluation/report")  # [tool.mutmut] only_mutate, as paths below transferkit/
MUTANTS = Path("mutants")


def exit_codes() -> dict[str, dict[str, int | None]]:
    """Each module's mutants and their last exit codes, from the metadata mutmut writes for them."""
    return {module: json.loads((MUTANTS / "transferkit" / f"{module}.py.meta").read_text())["exit_code_by_key"]
            for module in MODULES}


def mutants_by_module() -> dict[str, list[str]]:
    """Every mutant name, by module."""
    return {module: sorted(codes) for module, codes in exit_codes().items()}


def statuses() -> dict[str, str]:
    from mutmut.stats import status_by_exit_code

    return {name: status_by_exit_code[code] for codes in exit_codes().values() for name, code in codes.items()}


def wilson(killed: int, total: int, z: float = 1.96) -> tuple[float, float]:
    """95% interval of a proportion from ``killed`` of ``total``."""
    if total == 0:
        return (0.0, 1.0)
    p = killed / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return (max(0.0, centre - half), min(1.0, centre + half))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-module", type=int, default=2, help="mutants drawn from each module")
    parser.add_argument("--seed", type=int, default=1, help="seed of the draw")
    parser.add_argument("--max-children", type=int, default=2, help="mutants tested at once")
    parser.add_argument("--names", nargs="*", default=None, help="test these mutants instead of a draw")
    parser.add_argument("--report-only", action="store_true", help="summarise mutants/sample.json, run nothing")
    args = parser.parse_args(argv)
    mutmut = [sys.executable, "-m", "mutmut"]
    if not (MUTANTS / "transferkit" / "training" / "trainer.py.meta").exists():
        subprocess.run(mutmut + ["run", "transferkit.evaluation.metrics.x_roc_auc__mutmut_1"], check=True)  # generates them all
    record = MUTANTS / "sample.json"
    if args.report_only:
        sample = json.loads(record.read_text())["sample"]
    elif args.names:
        sample = {m: [n for n in args.names if n.startswith(f"transferkit.{m.replace('/', '.')}.")] for m in MODULES}
    else:
        rng = random.Random(args.seed)
        sample = {m: sorted(rng.sample(names, min(args.per_module, len(names))))
                  for m, names in mutants_by_module().items()}
    chosen = [name for names in sample.values() for name in names]
    if not args.report_only:
        subprocess.run(mutmut + ["run", "--max-children", str(args.max_children), *chosen], check=False)
    found = statuses()
    print(f"{'module':10} {'mutants':>8} {'sampled':>8} {'detected':>8} {'crashed':>8} {'survived':>9} "
          f"{'timeout':>8} {'no tests':>9}  score (95% interval)")
    everything = mutants_by_module()
    totals = {"killed": 0, "tested": 0}
    for module, names in sample.items():
        if not names:
            continue
        seen = [found.get(n, "not checked") for n in names]
        # "segfault" is mutmut's word for a test process that died of a signal: it does not tell whether
        # a test failed, so these are listed to check by hand and counted as undetected here.
        crashed = seen.count("segfault")
        timeout = seen.count("timeout")  # the tests ran 15 times longer than unmutated: detected
        killed = seen.count("killed") + timeout
        survived = seen.count("survived")
        tested = killed + survived + crashed
        untested = seen.count("no tests")  # no test reaches it: undetected
        low, high = wilson(killed, tested + untested)
        score = killed / (tested + untested) if tested + untested else float("nan")
        totals["killed"] += killed
        totals["tested"] += tested + untested
        print(f"{module:10} {len(everything[module]):>8} {len(names):>8} {killed:>8} {crashed:>8} {survived:>9} "
              f"{timeout:>8} {untested:>9}  {score:.0%} ({low:.0%}-{high:.0%})")
    low, high = wilson(totals["killed"], totals["tested"])
    print(f"{'all':10} {sum(map(len, everything.values())):>8} {len(chosen):>8} {totals['killed']:>8}  score "
          f"{totals['killed'] / max(1, totals['tested']):.0%} ({low:.0%}-{high:.0%})")
    survivors = [n for n in chosen if found.get(n) in ("survived", "no tests")]
    print("survivors:", *survivors, sep="\n  ")
    crashes = [n for n in chosen if found.get(n) == "segfault"]
    print("crashed (check by hand):", *crashes, sep="\n  ")
    record.write_text(json.dumps({"sample": sample, "status": {n: found.get(n) for n in chosen}}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
