# Every target sets up what it needs: a fresh clone runs `make step2` or `make test` directly.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU wheel keeps the install small on machines without a GPU; override for a GPU head node,
# e.g. `make install TORCH=torch`.
TORCH  ?= torch==2.13.0
TRIALS ?= 100
SAMPLE ?= 450
# Sieve-made demo data in Step 1's output format (about 17,000 survivors, 4,000 train / 1,000 holdout
# draws) and its null variant (the same survivors, uniform draws). Step 1's folder states no modulus:
# its sieve compares draws mod 1000, so step2 says so with --mod 1000.
DATA   := data/demo
NULL   := data/demo-null

.PHONY: install test lint data step2 faults bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check .

$(DATA)/demo_truth.json: | install
	$(PY) -m worker demo --out $(DATA) --null $(NULL)

data: $(DATA)/demo_truth.json

step2: data
	$(VENV)/bin/coordinator step2 --rigs rigs.toml --data $(DATA) --mod 1000 --trials $(TRIALS) --sample-size $(SAMPLE)

faults: install
	$(PY) -m pytest -q tests/faults

bench: data
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) data jobs/*/ runs optuna_studies optimal_scorer_config.json optimal_scorer_config.*.json
