# The two commands the README starts with. Both work on a fresh machine.
#   make run   install into .venv, migrate the demo SQLite database, serve on 127.0.0.1:8000
#   make test  install, make sure PostgreSQL and Redis run, run the whole suite on PostgreSQL
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install services browser lint migrations-check bench promtool alerts-test

$(STAMP): requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

install: $(STAMP)

# The demo: SQLite, the Midtrans simulator, console email and WhatsApp, tasks in-process.
run: export DEBUG ?= true
run: export MIDTRANS_SIMULATOR ?= true
run: export DATABASE_URL ?= sqlite:///$(CURDIR)/db.sqlite3
run: export PUBLIC_BASE_URL ?= http://127.0.0.1:8000
run: export EMAIL_URL ?= consolemail://
run: export WHATSAPP_BACKEND ?= console
run: install
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py demo_admin
	$(BIN)/python manage.py runserver 127.0.0.1:8000

services:
	bash scripts/ensure-services.sh

# Chromium for the browser tests; openssl makes the TLS tests' throwaway certificate.
browser:
	@command -v chromium >/dev/null && command -v openssl >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium openssl >/dev/null)

# promtool (Debian's prometheus package) for the alert rules' unit tests; gpg for the encrypted backup test.
promtool:
	@command -v promtool >/dev/null && command -v gpg >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus gnupg >/dev/null)

alerts-test: promtool
	promtool check rules deploy/prometheus/alerts.yml
	promtool test rules deploy/prometheus/tests.yml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	DATABASE_URL=sqlite:///:memory: $(BIN)/mypy

migrations-check: install
	DATABASE_URL=sqlite:///:memory: DEBUG=true MIDTRANS_SIMULATOR=true $(BIN)/python manage.py makemigrations --check --dry-run

test: install services browser lint migrations-check alerts-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The benchmarks, one after the other (each prints its own figures and targets).
bench: install services
	$(BIN)/python bench/checkout.py
	$(BIN)/python bench/webhooks.py
	$(BIN)/python bench/notifications.py
	$(BIN)/python bench/import.py
