# Two commands a newcomer needs: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False

.PHONY: demo test test-ui test-distributed airflow soak lint bench clean

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

# The real Airflow UI (api-server, scheduler, dag-processor, triggerer) on http://127.0.0.1:$(AIRFLOW_PORT) with the
# project's DAGs, the AWS emulator, a SQLite queue and a fake Slack; prints who to log in as. Ctrl-C stops it all.
AIRFLOW_PORT ?= 8080
airflow: $(STAMP)
	$(BIN)/python -m elevation.devkit.airflow_local --port $(AIRFLOW_PORT)

# Only the end-to-end test through Airflow's real processes (also part of `make test`).
test-ui: $(STAMP)
	$(BIN)/python -m pytest -m airflow_e2e -s $(PYTEST_ARGS)

# The production topology here: scheduler, dag-processor, triggerer, api-server and two Celery workers as separate
# processes on PostgreSQL and Redis (elevation.devkit.distributed); a batch of requests through the scheduled DAGs,
# checked at the end (final states, only standing assignments left, tasks on both workers). About 4 minutes.
# Needs PostgreSQL (ELEVATION_TEST_POSTGRES_URL, default postgres@127.0.0.1:5432/test) and Redis (127.0.0.1:6379).
test-distributed: $(STAMP)
	$(BIN)/python -m elevation.devkit.distributed $(DISTRIBUTED_ARGS)

# Many more simulated days than `make test` plays (tests/simulation): prints the days run and the invariant
# violations found (0 expected), by kind with their seeds; each failing day's report goes to $(SOAK_REPORTS).
# Every setting can come from the environment: SOAK_EXAMPLES=500 SOAK_SEED=7 make soak
comma := ,
SOAK_EXAMPLES ?= 100
SOAK_SEED     ?= 1
SOAK_HOURS    ?= 24
SOAK_EVENTS   ?= 200
SOAK_BACKENDS ?= $(if $(ELEVATION_TEST_POSTGRES_URL),sqlite$(comma)postgres,sqlite)
SOAK_REPORTS  ?= /tmp/elevation-soak

soak: $(STAMP)
	SIM_EXAMPLES=$(SOAK_EXAMPLES) SIM_SEED=$(SOAK_SEED) SIM_HOURS=$(SOAK_HOURS) SIM_EVENTS=$(SOAK_EVENTS) \
	SIM_BACKENDS=$(SOAK_BACKENDS) SIM_REPORTS=$(SOAK_REPORTS) \
	$(BIN)/python -m pytest tests/simulation/test_simulated_days.py -q --tb=no -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)  # each prints its numbers and the machine; BENCHMARKS.md records them
	$(BIN)/python benchmarks/bench_dag_parse.py
	$(BIN)/python benchmarks/bench_grants.py
	$(BIN)/python benchmarks/bench_extract.py
	$(BIN)/python benchmarks/bench_audit.py
	$(BIN)/python benchmarks/bench_reconcile.py

clean:
	rm -rf $(VENV) .demo .airflow .pytest_cache .ruff_cache
