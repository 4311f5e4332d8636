# Two commands: `make demo` runs the arena on its embedded default; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install install-test bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt | $(VENV)/bin/python
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

$(VENV)/.installed-test: requirements.txt requirements-test.txt $(STAMP)
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $(VENV)/.installed-test

install: $(STAMP)
install-test: $(VENV)/.installed-test

demo: $(STAMP)
	$(PY) manage.py demo

test: $(VENV)/.installed-test
	$(PY) -m tests.run $(ARGS)

bench: $(VENV)/.installed-test
	$(PY) bench/backends.py
	$(PY) bench/ratings.py
	$(PY) bench/streaming.py
	$(PY) bench/votes.py

clean:
	rm -rf $(VENV) var staticfiles
