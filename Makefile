# Two commands: `make demo` runs the arena on its embedded default; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install install-test bench bench-refresh clean

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

# Benchmarks print figures next to a peer or baseline measured in the same run. evalica is a
# peer for the rating bench only, so it is installed here and not in requirements.
bench: $(VENV)/.installed-test
	$(PY) -m pip install --quiet evalica==0.4.2
	$(PY) bench/backends.py
	$(PY) bench/readers.py
	$(PY) bench/ratings.py
	$(PY) bench/streaming.py
	$(PY) bench/votes.py
	$(PY) bench/load.py --minutes 3

# The database refresh at full size (2M votes) takes about half an hour: run it on its own.
bench-refresh: $(VENV)/.installed-test
	$(PY) bench/refresh.py

clean:
	rm -rf $(VENV) var staticfiles
