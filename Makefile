# Two commands matter: `make run` (the whole curriculum at the cpu preset) and `make test`.
# Both create .venv on first use; later calls reuse it (the stamp is refreshed only when
# pyproject.toml changes).
#   make run PRESET=smoke ONLY=01   one notebook at the seconds-long smoke preset (a first result)
#   make check                      are the lessons still shown? checks the run in $(OUT) if there
#                                   is one, else runs the curriculum first; exits non-zero on a miss
#   make lab                        JupyterLab on the repository (opens in notebooks/)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.vidlab-installed
PRESET ?= cpu
OUT ?= runs/$(PRESET)
ONLY ?=

.PHONY: run check test test-fast lab bench venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name vidlab --display-name "Python (vidlab)" >/dev/null
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m vidlab run --preset $(PRESET) --out $(OUT) $(if $(ONLY),--only $(ONLY))

check: $(STAMP)
	@if [ -f $(OUT)/summary.json ]; then \
		echo "make check: the run in $(OUT) against the lesson thresholds (make clean, or OUT=..., for a new run)"; \
		$(BIN)/python -m vidlab check --out $(OUT) $(if $(ONLY),--only $(ONLY)); \
	else \
		echo "make check: no run in $(OUT) yet: running the curriculum first"; \
		$(BIN)/python -m vidlab run --check --preset $(PRESET) --out $(OUT) $(if $(ONLY),--only $(ONLY)); \
	fi

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not notebooks and not slow"

lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.root_dir=. --FileContentsManager.preferred_dir=notebooks

bench: $(STAMP)
	$(BIN)/python benchmarks/data_loading.py

clean:
	rm -rf runs .pytest_cache
