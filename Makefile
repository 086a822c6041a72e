# Two commands do all set-up on a fresh machine:
#   make demo   - build .venv, start a local GCS emulator, write sample data, convert it
#   make test   - build .venv, run ruff, mypy and the whole test suite (what CI runs)
# The environment lives in .venv at the project root; the command is .venv/bin/objectron-wds.

VENV := .venv
PY := $(VENV)/bin/python
UV := python3 -m uv
# Prefect offline: no telemetry, no GCE metadata probe, time for the local server to start.
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export NO_GCE_CHECK := true
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120

.PHONY: setup browser demo test lint typecheck pytest lock clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements.lock
	python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q uv
	test -x $(PY) || $(UV) venv $(VENV) -p 3.11
	$(UV) pip install -q -p $(PY) -r requirements.lock
	$(UV) pip install -q -p $(PY) --no-deps -e .
	touch $@

demo: setup
	$(VENV)/bin/objectron-wds demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: setup
	$(VENV)/bin/mypy

pytest: setup browser
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

# The UI test drives Debian's Chromium (never a browser download); installed when missing.
browser:
	@test -x /usr/bin/chromium || { \
	  test "$$(id -u)" = 0 || { echo "make browser: run as root, or: sudo apt-get install -y chromium"; exit 1; }; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# Re-pin after changing dependencies in pyproject.toml.
lock:
	$(UV) pip compile pyproject.toml --extra dev --extra dask -p 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) demo-output .pytest_cache .mypy_cache .ruff_cache
