# Two commands do all the set-up: `make run` and `make test`. Both create .venv when needed.
PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: run check test lint bench emulator locales clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found: install Python 3.11 or run make PYTHON=python3"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m bot

check: $(STAMP)
	$(PY) -m bot --check

test: $(STAMP)
	$(PY) -m ruff check .
	PTB_TIMEDELTA=1 $(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check .

bench: $(STAMP)
	$(PY) -m bench

emulator: $(STAMP)
	$(PY) -m tests.emulators.telegram

# Re-extract the message template after changing texts; then update the catalogues.
locales: $(STAMP)
	$(VENV)/bin/pybabel extract -F babel.cfg -k _ -k N_ -o locales/bot.pot --no-location --sort-output --project solidarity-relay .
	$(VENV)/bin/pybabel update -i locales/bot.pot -d locales -D bot --no-fuzzy-matching --ignore-obsolete

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
