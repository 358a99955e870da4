# Two commands for a fresh machine: `make demo` and `make test` (both create .venv on first use).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch is installed first and pinned, so that no later requirement pulls a different (CUDA) build.
# On a machine with internet and no GPU, a CPU build comes from PyTorch's index:
#   make test TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH_INDEX) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(PY) main.py --config configs/quickstart.json --data data/quickstart --workdir runs/quickstart --force

test: $(VENV)/.installed
	$(PY) -m pytest -p no:cacheprovider tests

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench

bench: $(VENV)/.installed
	$(PY) -m bench.layers
	$(PY) -m bench.train_step

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info
