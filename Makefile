# lightning-tickets developer commands. Each target installs what it needs, idempotently, into the active
# virtualenv ($VIRTUAL_ENV) or else into ./.venv (created on first use). A CPU build of torch is installed first
# only when no torch is importable, so a machine without a GPU never pulls a multi-GB CUDA build.
PYTHON ?= python3
TORCH_PIN ?= torch==2.13.0
# e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu to force a CPU build where PyPI would pick a CUDA one
TORCH_INDEX ?=
# e.g. TORCH_FIND_LINKS=/opt/wheels to install torch from a folder of wheels (no download)
TORCH_FIND_LINKS ?=
# the venv of `make test-min`: every dependency at its declared floor (torch stays at TORCH_PIN)
MIN_ENV ?= $(CURDIR)/.venv-min
PYTEST_ARGS ?=

ifdef VIRTUAL_ENV
ENV_DIR := $(VIRTUAL_ENV)
else
ENV_DIR := $(CURDIR)/.venv
endif
PY := $(ENV_DIR)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(ENV_DIR)/.lightning-tickets

.PHONY: help install test test-all test-min wheel demo demo-quick bench docs lint clean

help:
	@echo "make test      install (test + demo extras) and run the test suite"
	@echo "make test-min  run the suite (test + demo extras) in .venv-min with every dependency at its pyproject.toml floor"
	@echo "make wheel     build the wheel into dist/"
	@echo "make demo      install (demo extra) and find a lottery ticket on easy-VQA (about 15 min on 2 CPU cores)"
	@echo "make demo-quick   the 3-minute smoke version of the demo"
	@echo "make bench     run the benchmark scripts (figures go to docs/performance.md)"
	@echo "make docs      build the documentation site into site/"
	@echo "make lint      ruff check + format check"

$(PY):
	$(PYTHON) -m venv $(ENV_DIR)

$(STAMP)-torch: | $(PY)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) install "$(TORCH_PIN)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	@touch $@

$(STAMP)-%: pyproject.toml $(STAMP)-torch
	$(PIP) install -e ".[$(subst +,$(comma),$*)]"
	@touch $@

comma := ,
TORCH_SOURCES = $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS))

install: $(STAMP)-test+demo

test: $(STAMP)-test+demo
	$(PY) -m pytest -q

test-all: $(STAMP)-test+demo
	$(PY) -m pytest -q --runslow

# The floors come from pyproject.toml (scripts/min_requirements.py), so they cannot drift from what is declared.
test-min: pyproject.toml
	test -x $(MIN_ENV)/bin/python || $(PYTHON) -m venv $(MIN_ENV)
	$(MIN_ENV)/bin/python -c "import torch" 2>/dev/null || \
	  $(MIN_ENV)/bin/python -m pip --disable-pip-version-check install "$(TORCH_PIN)" $(TORCH_SOURCES)
	$(MIN_ENV)/bin/python scripts/min_requirements.py > $(MIN_ENV)/floors.txt
	$(MIN_ENV)/bin/python -m pip --disable-pip-version-check install -e ".[test,demo]" -r $(MIN_ENV)/floors.txt
	$(MIN_ENV)/bin/python -m pip freeze | grep -i -E "^(torch|lightning|torchmetrics|transformers|jsonargparse|safetensors|huggingface)"
	$(MIN_ENV)/bin/python -m pytest -q $(PYTEST_ARGS)

wheel: $(STAMP)-test
	rm -rf build  # stale modules of an earlier build would end up in the wheel
	$(PIP) wheel --no-deps --no-build-isolation -w dist .

demo: $(STAMP)-demo
	$(ENV_DIR)/bin/lightning-tickets fit --config examples/easy_vqa/imp.yaml

demo-quick: $(STAMP)-demo
	$(ENV_DIR)/bin/lightning-tickets fit --config examples/easy_vqa/quick.yaml

bench: $(STAMP)-test+demo
	$(PY) benchmarks/overhead.py
	@for s in threshold memory ticket_size scaling structured; do \
	  if [ -f benchmarks/$$s.py ]; then $(PY) benchmarks/$$s.py || exit $$?; fi; done

docs: $(STAMP)-docs
	$(ENV_DIR)/bin/mkdocs build --strict

lint: $(STAMP)-test+demo
	$(ENV_DIR)/bin/ruff check lightning_tickets tests benchmarks examples
	$(ENV_DIR)/bin/ruff format --check lightning_tickets tests benchmarks examples

clean:
	rm -rf build dist *.egg-info site .pytest_cache runs
