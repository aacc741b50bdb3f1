# The two commands of the README: `make run` starts the app, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8501

.PHONY: run test bench reliability clean-venv

run: .stamp-runtime
	$(BIN)/streamlit run app.py --server.port $(PORT)

test: .stamp-dev
	$(BIN)/python -m pytest

bench: .stamp-runtime
	$(BIN)/python -m resattn.bench

# Run the tests that record rows of the reliability table, then publish the table.
reliability: .stamp-dev
	$(BIN)/python -m pytest -m reliability -q
	cp test-artifacts/reliability.md docs/reliability.md

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Re-install only when the requirements change.
.stamp-runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install -r requirements.txt
	touch $@

.stamp-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install -r requirements-dev.txt
	touch $@ .stamp-runtime

clean-venv:
	rm -rf $(VENV) .stamp-runtime .stamp-dev
