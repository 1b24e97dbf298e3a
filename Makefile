# Two commands for a fresh machine: `make demo` (the cats-vs-dogs example) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-unit test-realdata test-docs docs mutation clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/cats_vs_dogs.py --overwrite $(ARGS)

# The docs tier (every code block of docs/ and the README, with the real weights; ~5 min) runs apart:
# `make test-docs`, or `make test ARGS="-m docs"`. CI runs both.
test: $(STAMP)
	$(BIN)/python -m pytest -m "not docs" $(ARGS)

test-docs: $(STAMP)
	$(BIN)/python -m pytest -m docs $(ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m "not realdata and not docs" $(ARGS)

test-realdata: $(STAMP)
	$(BIN)/python -m pytest -m realdata -s $(ARGS)

# Mutation testing of the training core over a seeded sample of its mutants (tests/README.md; ~1 hour).
mutation: $(STAMP)
	$(BIN)/python tests/mutation_sample.py $(ARGS)

docs: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache mutants
