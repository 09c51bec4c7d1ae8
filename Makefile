# r1hpc: `make demo` runs the main job on the embedded tiny CPU config; `make test` runs the tests
# (it installs what it needs and starts, then stops, a real single-node Slurm test cluster).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
CLUSTER := $(PYTHON) slurm/testcluster/cluster.py

.PHONY: install system-deps lint test test-unit demo demo-moe cluster-up cluster-down clean

# constraints.txt is the complete lock of what was tested together (torch: the CPU build);
# DS_BUILD_OPS=0: DeepSpeed builds no CUDA ops at install time.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	DS_BUILD_OPS=0 $(PY) -m pip install -q --no-deps -r constraints.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

system-deps:
	$(CLUSTER) install

# Lint and format check first: a tree ruff rejects fails before the cluster starts.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: install system-deps lint
	$(CLUSTER) run -- $(PY) -m pytest $(PYTEST_ARGS)

# Tests that need no Slurm cluster (quick inner loop).
test-unit: install lint
	$(PY) -m pytest -m "not slurm" $(PYTEST_ARGS)

demo: install
	$(PY) -m r1hpc.cli demo configs/tiny.yaml

# The GRPO stages on the Megatron-core backend: a tiny DeepSeek-V3-style MoE (MLA, routed + shared
# experts) trained at TP2 by two local processes per train job (configs/tiny_moe.yaml).
demo-moe: install
	$(PY) -m r1hpc.cli run configs/tiny_moe.yaml --stages data,base,r1_zero,eval,report

cluster-up: system-deps
	$(CLUSTER) start

cluster-down:
	$(CLUSTER) stop

clean:
	rm -rf $(VENV) runs .pytest_cache
