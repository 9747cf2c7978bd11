# The two commands a new machine needs: `make demo` and `make test`. Both create .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test ui bench-sync bench-rules bench-payments bench-replies bench-sources replay-month lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# make demo AR_SOURCE=qbo (or netsuite): the same demo with QuickBooks Online / NetSuite as the AR source.
AR_SOURCE ?= billcom

demo: $(STAMP)
	$(BIN)/agentcollect demo --ar-source $(AR_SOURCE)

test: $(STAMP)
	$(BIN)/python -m pytest agentcollect_pipeline_tests

ui: $(STAMP)
	$(BIN)/agentcollect ui --ar-source $(AR_SOURCE)

bench-sync: $(STAMP)
	$(BIN)/python benchmarks/bench_sync.py

bench-rules: $(STAMP)
	$(BIN)/python benchmarks/bench_rules.py

# Needs a PostgreSQL: AGENTCOLLECT_TEST_POSTGRES_URL (default postgresql+psycopg2://postgres@127.0.0.1:5432/postgres).
bench-payments: $(STAMP)
	$(BIN)/python benchmarks/bench_payments.py

# Reply classification (issue 7) on the frozen evaluation set; LLM figures too when AGENTCOLLECT_LLM_* are set.
bench-replies: $(STAMP)
	$(BIN)/python benchmarks/bench_replies.py

# A month through the real jobs on the sandboxes (outside CI, a few minutes): prints one JSON line of figures.
replay-month: $(STAMP)
	$(BIN)/python benchmarks/replay_month.py $(ARGS)

# Sync, freshness read and exactly-once posting on the Bill.com, QuickBooks Online and NetSuite sandboxes (issue 8).
bench-sources: $(STAMP)
	$(BIN)/python benchmarks/bench_sources.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf .dagster_home .agentcollect
