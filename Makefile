# Two commands matter: `make run` (the whole curriculum at the cpu preset) and `make test`.
# Both create .venv on first use; later calls reuse it (the stamp is refreshed only when
# pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vidlab-installed
PRESET ?= cpu
OUT ?= runs/$(PRESET)
ONLY ?=

.PHONY: run test test-fast lab bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name vidlab --display-name "Python (vidlab)" >/dev/null
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m vidlab run --preset $(PRESET) --out $(OUT) $(if $(ONLY),--only $(ONLY))

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not notebooks and not slow"

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/

bench: $(STAMP)
	$(BIN)/python benchmarks/data_loading.py

clean:
	rm -rf runs .pytest_cache
