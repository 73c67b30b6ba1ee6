# One-command entry points: `make demo` and `make test` build the environment themselves.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 3
# Hide pip's complaints about index locations configured on the machine but absent.
PIP_QUIET := 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup test test-unit test-e2e test-reliability demo docs clean help lock
help:
	@echo "make demo   - set up .venv (first time: ~5 min) and run the end-to-end demo"
	@echo "make test   - set up .venv and run the whole test suite"
	@echo "make docs   - rewrite the current-results tables from the results files, build docs/api/"
	@echo "make setup  - only create/refresh .venv from requirements.lock"
	@echo "make clean  - remove .venv and demo outputs"

setup: $(STAMP)

$(STAMP): requirements.lock requirements-nodeps.lock setup.py
	@if ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' 2>/dev/null; then \
	  py=$$(scripts/find-python310.sh); \
	  echo "[setup] creating $(VENV) with $$py"; rm -rf $(VENV); "$$py" -m venv $(VENV); \
	fi
	@echo "[setup] installing the locked stack (requirements.lock); a fresh install takes ~5 min"
	@$(PY) -m pip install --quiet --upgrade "pip==24.2" $(PIP_QUIET)
	@$(PY) -m pip install --quiet --no-deps -r requirements.lock $(PIP_QUIET)
	@$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.lock $(PIP_QUIET)
	@$(PY) -m pip install --quiet --no-deps --no-build-isolation --use-pep517 --config-settings editable_mode=compat -e . $(PIP_QUIET)
	@$(PY) -c 'import dspnet_tf, tensorflow as tf; assert tf.keras.__name__.startswith("tf_keras"), tf.keras.__name__'
	@touch $(STAMP)
	@echo "[setup] ready: $(VENV)"

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-unit: setup
	$(PY) -m pytest -q -m "not e2e and not reliability" $(PYTEST_ARGS)

test-e2e: setup
	$(PY) -m pytest -q -m e2e $(PYTEST_ARGS)

test-reliability: setup
	$(PY) -m pytest -q -m reliability $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/dspnet demo --out demo-out --overwrite

# The tables of README.md, benchmarks/QUALITY.md and SPEED_AND_SCALE.md from the committed
# results files, then the API reference from the docstrings (docs/api/, not committed).
docs: setup
	$(PY) benchmarks/make_docs.py
	$(PY) docs/build_api_reference.py --out docs/api

clean:
	rm -rf $(VENV) demo-out

# Re-resolve requirements.in into exact pins (uv resolves the TFX stack in seconds; pip's
# resolver backtracks for a long time on it). Commit the result.
lock: setup
	$(PY) -m pip install --quiet uv $(PIP_QUIET)
	$(VENV)/bin/uv pip compile requirements.in --python-version 3.10 -o requirements.lock
