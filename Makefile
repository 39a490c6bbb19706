# agg — the two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR := data/demo

.PHONY: demo demo-serve test run install clean docs

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

# The whole pipeline on the bundled samples, offline: serve data/samples on
# 127.0.0.1 (dated up to now), fetch it into a demo database, list the stories, say how to browse them.
demo: $(VENV)/.installed
	@rm -rf $(DEMO_DIR) && mkdir -p $(DEMO_DIR)
	@$(BIN)/python -m aggregator.devserver data/samples --write-config $(DEMO_DIR)/feeds.yaml & \
	  server=$$!; trap 'kill $$server 2>/dev/null' EXIT; \
	  for i in $$(seq 100); do [ -s $(DEMO_DIR)/feeds.yaml ] && break; sleep 0.1; done; \
	  $(BIN)/agg --config $(DEMO_DIR)/feeds.yaml --db $(DEMO_DIR)/agg.db fetch && \
	  $(BIN)/agg --config $(DEMO_DIR)/feeds.yaml --db $(DEMO_DIR)/agg.db list
	@echo "Keep exploring: .venv/bin/agg --config $(DEMO_DIR)/feeds.yaml --db $(DEMO_DIR)/agg.db list --since 24h"
	@echo "(or show ID, search WORDS, export digest); to fetch again, 'make demo-serve' serves the samples"
	@echo "Browse the demo: $(BIN)/agg serve --db $(DEMO_DIR)/agg.db   (then open http://127.0.0.1:8080/)"

# Serve the samples again for the demo's config, on the port it names, until Ctrl-C:
# 'agg --config data/demo/feeds.yaml --db data/demo/agg.db fetch' then works from another terminal.
demo-serve: $(VENV)/.installed
	@[ -s $(DEMO_DIR)/feeds.yaml ] || { echo "no demo yet: run 'make demo' first"; exit 1; }
	$(BIN)/python -m aggregator.devserver data/samples --write-config $(DEMO_DIR)/feeds.yaml

# docs/cli.md is generated from the command line; tests/test_cli_docs.py fails when it is stale.
docs: $(VENV)/.installed
	$(BIN)/python -m aggregator.clidoc > docs/cli.md

test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

# Fetch the real feeds in feeds.yaml (needs the internet).
run: $(VENV)/.installed
	$(BIN)/agg fetch
	$(BIN)/agg list --limit 40

clean:
	rm -rf $(VENV) $(DEMO_DIR) *.egg-info
