# Two commands do everything on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo demo-quick test test-fast bench quality lint clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	# Request protos for TensorFlow Serving clients; its pinned `tensorflow` dependency would pull the
	# full GPU wheel next to tensorflow-cpu, so it goes in without dependencies.
	$(BIN)/pip install --quiet --no-deps 'tensorflow-serving-api>=2.21,<2.22'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/mvi-tf demo --out study

demo-quick: install
	$(BIN)/mvi-tf demo --out study-quick --quick

# Two test processes (pytest-xdist), one test file each at a time: most of a slow test's time is single-threaded
# graph building and Python, so two of them share the two cores of the CI machine well. Tests marked `solo` (the
# whole demo in one process, ~9 GB) run afterwards on their own, so that they never meet another process's
# memory. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
test: install
ifeq ($(TEST_WORKERS),0)
	$(BIN)/python -m pytest -q -ra --durations=15
else
	$(BIN)/python -m pytest -q -ra --durations=15 -n $(TEST_WORKERS) --dist loadfile -m "not solo"
	$(BIN)/python -m pytest -q -ra --durations=3 -m solo
endif

test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not slow" -n $(TEST_WORKERS) --dist loadfile

bench: install
	$(BIN)/python -m bench --out BENCHMARKS.md

# Multi-seed model quality on the full synthetic cohort (hours; resumable, results accumulate across sittings).
quality: install
	$(BIN)/python -m bench.quality

lint: install
	$(BIN)/ruff check mvi_tf data_prep tests bench

clean:
	rm -rf $(VENV) study study-quick .pytest_cache
