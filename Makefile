# The two commands of the README: `make run` starts the app, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PORT   ?= 8501

.PHONY: run test bench reliability mutants verify-checkpoints clean-venv

run: .stamp-runtime
	$(BIN)/streamlit run app.py --server.port $(PORT)

test: .stamp-dev
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: .stamp-runtime
	$(BIN)/python -m resattn.bench

# Re-evaluate every shipped checkpoint (and seed) on the pack's whole val split and hold it to
# its card's top-1 (0.5 point); needs ../shared/data. About a minute per network on one core.
verify-checkpoints: .stamp-runtime
	@failed=0; for card in checkpoints/*.json checkpoints/seeds/*.json; do \
	  out=$$($(BIN)/python -m resattn.evaluate "$$card" --check-card 2>&1); rc=$$?; \
	  echo "$$out" | tail -n 1; [ $$rc -eq 0 ] || failed=1; \
	done; exit $$failed

# Run the tests that record rows of the reliability table, then publish the table, but only a
# complete one: every such test passed and recorded its rows, and no case of the published
# table went missing (tests/conftest.py, --reliability-publish).
reliability: .stamp-dev
	$(BIN)/python -m pytest tests -m reliability -q --reliability-publish docs/reliability.md

# Apply named realistic mistakes to a copy of the repository and check that the tests catch
# each one; writes the table of docs/testing.md (scripts/mutants.py). On demand, not in CI.
mutants: .stamp-dev
	nice -n 19 $(BIN)/python scripts/mutants.py --write docs/testing.md

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
