# Two commands a newcomer needs: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m elevation.devkit.demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)  # each prints its numbers and the machine; BENCHMARKS.md records them
	$(BIN)/python benchmarks/bench_dag_parse.py
	$(BIN)/python benchmarks/bench_grants.py
	$(BIN)/python benchmarks/bench_extract.py
	$(BIN)/python benchmarks/bench_audit.py

clean:
	rm -rf $(VENV) .demo .pytest_cache .ruff_cache
