# aamdest: `make run` starts a demo stack, `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_BROKER_URL ?= redis://127.0.0.1:6379/0
# The end-to-end tests run once more with RabbitMQ as the broker (Redis still coordinates).
TEST_AMQP_URL ?= amqp://guest:guest@127.0.0.1:5672//

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
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) TEST_AMQP_URL=$(TEST_AMQP_URL) DJANGO_DEBUG=1 \
		$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_batch.py $(BENCH_BATCH_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	DJANGO_DEBUG=1 $(BIN)/mypy .
	$(BIN)/python scripts/check_shape.py

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
