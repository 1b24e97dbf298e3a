"""Rebuild a training run's report.html.

Write RUN_DIR/report.html again from the run's metrics.json and pictures (and any export parity
records beside them): one self-contained page.
"""

from __future__ import annotations

from transferkit.cli.options import command_parser


def add_parser(commands) -> None:
    p = command_parser(commands, "report", __doc__)
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --output folder of transferkit train")


def run(args) -> int:
    from transferkit.evaluation.report import write_report

    print(f"Wrote {write_report(args.run_dir)}")
    return 0
