# Two commands do all the set-up: `make run` and `make test`. Both create .venv when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
RUNTIME := $(VENV)/.installed-runtime
DEV     := $(VENV)/.installed-dev

.PHONY: run check test lint bench emulator locales clean dovecot

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

test: $(DEV) dovecot
	$(PY) -m ruff check .
	PTB_TIMEDELTA=1 $(PY) -m pytest

# The email tests run their own unprivileged Dovecot on loopback (tests/mailserver.py) and need only its binary.
# Installed when missing and we may (root or password-less sudo, apt-get); this never fails the build: without
# Dovecot the email tests skip and say why. The package's own system service is stopped and disabled at once:
# it would listen on every interface, and ours does not need it.
DOVECOT_LOG := $${TMPDIR:-/tmp}/solidarity-relay-dovecot-install.log
dovecot:
	@test -x /usr/sbin/dovecot && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=no; fi; \
	if [ "$$sudo" = no ] || ! command -v apt-get >/dev/null; then \
		echo "Dovecot is not installed and cannot be installed here (needs apt-get and root): email tests will skip"; exit 0; fi; \
	install="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends dovecot-imapd dovecot-lmtpd"; \
	if { $$install || { $$sudo apt-get update -q && $$install; }; } </dev/null >$(DOVECOT_LOG) 2>&1; then \
		if [ -d /run/systemd/system ]; then $$sudo systemctl disable --now dovecot.service dovecot.socket; \
		else $$sudo invoke-rc.d dovecot stop; $$sudo update-rc.d dovecot disable; fi >>$(DOVECOT_LOG) 2>&1; \
		echo "Installed Dovecot for the email tests (system service stopped and disabled)"; \
	else echo "Could not install Dovecot (see $(DOVECOT_LOG)): email tests will skip"; fi

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
