# The two README commands: `make demo` and `make test`. Both create .venv and install on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# Two test processes: most long tests wait on subprocesses, servers and sleeps; one module stays in one process
# (module fixtures such as the end-to-end Prefect server are built once).
TEST_WORKERS ?= 2

.PHONY: install demo test lint bench clean-state

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt torch torchvision
	$(PY) -m pip install -q -c constraints.txt -e ".[dev,dask]"
	touch $@

install: $(STAMP)

demo: install
	$(PY) -m flows.demo

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=20 $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .

# Every speed benchmark with its default repeats, then the README's tables from their result files. The learning
# check (hours) runs on its own: $(PY) benchmarks/bench_learning_check.py.
SPEED_BENCHMARKS := shard optical_flow pretrain captions scale loader eval
bench: install
	set -e; for b in $(SPEED_BENCHMARKS); do $(PY) benchmarks/bench_$$b.py; done
	$(PY) benchmarks/render.py

clean-state:
	rm -rf .state
