# Every target sets up what it needs: a fresh clone runs `make step2` or `make test` directly.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# The CPU wheel keeps the install small on machines without a GPU; override for a GPU head node,
# e.g. `make install TORCH=torch`.
TORCH  ?= torch==2.13.0
TRIALS ?= 100
# DEMO=demo: planted data at the proposal's scale (17,126 survivors, sample 450, 4,000/1,000 draws).
# DEMO=signal: a scale at which the planted structure is measurable (see docs/BENCHMARKS.md).
DEMO   ?= demo
ifeq ($(DEMO),signal)
SYNTH  := --survivors 1000 --holdout 1500
SAMPLE ?= 900
else
SYNTH  :=
SAMPLE ?= 450
endif
DATA   := data/$(DEMO)

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

$(DATA)/survivors.npz: | install
	$(PY) -m worker synth --out $(DATA) --mode planted $(SYNTH)

data: $(DATA)/survivors.npz

step2: data
	$(VENV)/bin/coordinator step2 --rigs rigs.toml --data $(DATA) --trials $(TRIALS) --sample-size $(SAMPLE)

faults: install
	$(PY) -m pytest -q tests/faults

bench: data
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) data jobs/*/ runs optuna_studies optimal_scorer_config.json optimal_scorer_config.*.json
