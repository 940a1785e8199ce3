# Two commands on a fresh machine:  `make demo` (main job)  and  `make test` (test suite).
# Both create .venv when missing and (re)install when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: setup demo test bench experts clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: setup
	$(BIN)/qrobot run pick_place --episodes 5

test: setup
	$(BIN)/python -m pytest -n 2 -q

# The scripted-expert table in the README (50 seeded episodes per scenario).
experts: setup
	$(BIN)/qrobot bench --policies expert,random --episodes 50 --no-record --out runs/experts

bench: setup
	$(BIN)/python benchmarks/env_speed.py
	$(BIN)/python benchmarks/supervisor_latency.py
	$(BIN)/python benchmarks/stopping.py
	$(BIN)/python benchmarks/record_speed.py
	$(BIN)/python benchmarks/limit_conformance.py
	$(BIN)/python benchmarks/ssm_ablation.py

clean:
	rm -rf $(VENV) runs .pytest_cache
