# Two commands do all the set-up: `make run` and `make test`. Both create .venv when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
RUNTIME := $(VENV)/.installed-runtime
DEV     := $(VENV)/.installed-dev

.PHONY: run check test lint bench emulator locales clean

$(PY):
	@test -n "$(PYTHON)" || { echo "Python 3.11 or newer is needed (python3.11 or python3 on PATH)"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The bot alone: what a server needs.
$(RUNTIME): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $(RUNTIME)

# Tests and benchmarks also need pytest, ruff, aiohttp and a Synapse homeserver.
$(DEV): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(RUNTIME) $(DEV)

run: $(RUNTIME)
	$(PY) -m bot

check: $(RUNTIME)
	$(PY) -m bot --check

test: $(DEV)
	$(PY) -m ruff check .
	PTB_TIMEDELTA=1 $(PY) -m pytest

lint: $(DEV)
	$(PY) -m ruff check .

bench: $(DEV)
	PTB_TIMEDELTA=1 $(PY) -m bench

emulator: $(DEV)
	$(PY) -m tests.emulators.telegram

# Re-extract the message template after changing texts; then translate the new entries in each catalogue.
locales: $(DEV)
	$(VENV)/bin/pybabel extract -F babel.cfg -k _ -k N_ -o locales/bot.pot --no-location --sort-output --project solidarity-relay .
	$(VENV)/bin/pybabel update -i locales/bot.pot -d locales -D bot --no-fuzzy-matching --ignore-obsolete

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
