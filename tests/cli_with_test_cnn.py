"""``transferkit`` with the suite's small test CNN registered, for tests that run the command in a process."""

import sys

import conftest  # noqa: F401 - registers the "test_cnn" backbone

from transferkit.cli import main

if __name__ == "__main__":
    sys.exit(main())
