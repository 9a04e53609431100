# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
COMP := $(VENV)/bin/comp
STAMP := $(VENV)/.install-stamp
DEMO := configs/demo.yaml

.PHONY: install demo test lint bench clean

install: $(STAMP)

# Re-install only when the declared dependencies or pins change.
$(STAMP): setup.cfg constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: install
	test -f data/demo/train.csv || $(COMP) data demo --out data/demo
	$(COMP) folds make --config $(DEMO)
	$(COMP) tune --config $(DEMO)
	$(COMP) train --config $(DEMO) --params runs/demo/tune/best_params.yaml
	rm -f submissions/demo.csv submissions/demo-tta.csv
	$(COMP) submit --config $(DEMO) --tta auto
	# --tta auto writes demo-tta.csv, or demo.csv when no TTA beats none on the OOF predictions
	$(COMP) score $$(ls submissions/demo-tta.csv submissions/demo.csv 2>/dev/null | head -1) \
		--solution data/demo/solution.csv --metric accuracy

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check comp tests benchmarks

# Our speed against timm and the plain PyTorch loop: make bench BENCH_ARGS="--compare bench-out/old.json"
bench: install
	$(PY) -m benchmarks $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .cache data runs bench-out .pytest_cache .ruff_cache *.egg-info
	find folds submissions -mindepth 1 ! -name .gitkeep -exec rm -rf {} +
	find . -name __pycache__ -prune -exec rm -rf {} +
