# aamdest: `make run` starts a demo stack, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_BROKER_URL ?= redis://127.0.0.1:6379/0
# The end-to-end tests run once more with RabbitMQ as the broker (Redis still coordinates).
TEST_AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672//
# `make run` falls back to SQLite, so `make test` runs the delivery and destinations tests there too, after the whole
# suite on PostgreSQL (pytest-django tests in this file + ".test"), only those that use the database
# (tests/conftest.py); SQLITE_TESTS= skips that run.
SQLITE_TEST_DATABASE_URL ?= sqlite:///$(CURDIR)/db.sqlite3-test
SQLITE_TESTS ?= tests/delivery tests/destinations
SQLITE_PYTEST_ARGS ?= -q -m "not postgresql_only and not e2e"

.PHONY: run test bench lint clean

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python scripts/run_demo.py

test: $(STAMP)
	sh scripts/ensure_chromium.sh
	status=0; \
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) TEST_AMQP_URL=$(TEST_AMQP_URL) DJANGO_DEBUG=1 \
		$(BIN)/python -m pytest $(PYTEST_ARGS) || status=1; \
	if [ -n "$(SQLITE_TESTS)" ]; then \
		echo "== again on SQLite, make run's fallback: $(SQLITE_TESTS)"; \
		DATABASE_URL=$(SQLITE_TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) DJANGO_DEBUG=1 AAMDEST_DATABASE_TESTS_ONLY=1 \
			$(BIN)/python -m pytest $(SQLITE_PYTEST_ARGS) $(SQLITE_TESTS) || status=1; \
	fi; \
	exit $$status

# One table of issue 13's targets, also written to bench-results.json (scripts/bench_summary.py runs
# bench_ingest, bench_mix, bench_batch and reads bench.py --rate's JSON). BENCH_ARGS: e.g. --quick, --ingest-10m.
# scripts/bench.py and scripts/bench_batch.py still run alone, with their own options.
bench: $(STAMP)
	$(BIN)/python scripts/bench_summary.py $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	DJANGO_DEBUG=1 $(BIN)/mypy .
	$(BIN)/python scripts/check_shape.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
