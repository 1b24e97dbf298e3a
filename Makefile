# Two commands for a fresh machine: `make demo` (the cats-vs-dogs example) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow test-unit test-realdata test-docs test-without-tensorflow docs mutation clean

$(STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/cats_vs_dogs.py --overwrite $(ARGS)

# Three tiers run apart: `make test` (the everyday suite, ~13 min on 2 cores, in two workers), `make test-slow` (the tiers
# that start processes: kill-and-resume, other backends, several devices and processes, searches in
# worker processes, the backbone families; ~20 min) and `make test-docs` (every code block of docs/ and the
# README with the real weights; ~15 min). CI runs all three.
# `make test` runs its files in JOBS pytest-xdist workers (one file a worker at a time; JOBS=0: in one process).
JOBS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -m "not docs and not slow" -n $(JOBS) --dist loadfile $(ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m "slow and not docs" $(ARGS)

# A second environment WITHOUT TensorFlow (JAX, and PyTorch's CPU wheel where one is at hand without a download of
# several GB): the backends tier, the pipelines and the commands there (docs/howto/platforms.md; ~4 min once installed).
NOTF_VENV ?= .venv-without-tensorflow
NOTF_BIN := $(NOTF_VENV)/bin
NOTF_STAMP := $(NOTF_VENV)/.installed

$(NOTF_STAMP): pyproject.toml setup.py
	$(PYTHON) -m venv $(NOTF_VENV)
	$(NOTF_BIN)/python -m pip install --quiet --upgrade pip
	TRANSFERKIT_WITHOUT_TENSORFLOW=1 $(NOTF_BIN)/python -m pip install --quiet -e ".[jax,test]"
	$(NOTF_BIN)/python -m pip install --quiet --only-binary=:all: "torch==2.13.0+cpu" \
		|| echo "no local CPU wheel of PyTorch: its tests skip, saying so"
	touch $(NOTF_STAMP)

test-without-tensorflow: $(NOTF_STAMP)
	$(NOTF_BIN)/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('tensorflow') is not None)" \
		|| (echo "TensorFlow is installed in $(NOTF_VENV): this tier needs an environment without it" && false)
	env -u KERAS_BACKEND JAX_PLATFORMS=cpu $(NOTF_BIN)/python -m pytest -m "backends or without_tensorflow or not slow" \
		tests/test_backends.py tests/test_without_tensorflow.py tests/test_pipeline.py transferkit/data $(ARGS)

test-docs: $(STAMP)
	$(BIN)/python -m pytest -m docs $(ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m "not realdata and not docs and not slow" $(ARGS)

test-realdata: $(STAMP)
	$(BIN)/python -m pytest -m realdata -s $(ARGS)

# Mutation testing of the training core over a seeded sample of its mutants (tests/README.md; ~1 hour).
mutation: $(STAMP)
	$(BIN)/python tests/mutation_sample.py $(ARGS)

docs: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) $(NOTF_VENV) build dist *.egg-info .pytest_cache mutants
