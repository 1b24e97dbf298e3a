"""A stand-in trial for test_tuning: reports one epoch, then trains 'forever' (a child process's job)."""

import time


class SlowTrial:
    trial_id = "slow"

    def run(self, report):
        report(0, {"loss": 1.0})
        time.sleep(300)
        return {}
