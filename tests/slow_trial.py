"""A stand-in trial for test_tuning: reports one epoch, then trains 'forever' (a child process's job)."""

import time
from dataclasses import dataclass


@dataclass
class SlowTrial:
    trial_id: str = "slow"
    data: object = None

    def run(self, report):
        report(0, {"loss": 1.0})
        time.sleep(300)
        return {}
