# airlock: `make demo` runs the main job end to end, `make test` the test suite.
# Both install what they need on a fresh Debian machine (apt packages, then a venv).

VENV        ?= .venv
PYTHON      ?= python3
PY          := $(VENV)/bin/python
APT_PACKAGES = containerd runc docker-registry skopeo umoci busybox-static openssl zstd iproute2 tar curl systemd
TOOLS        = containerd ctr runc docker-registry skopeo umoci busybox openssl zstd ip tar curl systemd-analyze

.PHONY: deps bench-deps venv test demo lint bench fuzz clean

deps:
	@missing=""; for tool in $(TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages for:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y $(APT_PACKAGES); \
	fi

# The build benchmark also runs on a loop-mounted XFS (shared extents); only it needs xfsprogs.
bench-deps:
	@command -v mkfs.xfs >/dev/null 2>&1 || { SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y xfsprogs; }

# setuptools says "Editable installation" on every editable install; advice, not a problem here, so it is filtered.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	PYTHONWARNINGS='ignore:Editable installation' $(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

test: deps venv
	$(VENV)/bin/ruff check airlock builder bundle installer tests bench
	$(VENV)/bin/pytest -q

demo: deps venv
	$(PY) -m tests.demo

lint: venv
	$(VENV)/bin/ruff check airlock builder bundle installer tests bench

bench: deps bench-deps venv
	$(PY) -m bench.build_bench
	$(PY) -m bench.registry_bench
	$(PY) -m bench.registry_flood_bench
	$(PY) -m bench.install_bench
	$(PY) -m bench.upgrade_bench
	$(PY) -m bench.from_bench

# Not run by CI: a bounded fuzzing session of the bundle.json parser and the tar reader.
FUZZ_SECONDS ?= 60
fuzz: deps venv
	$(VENV)/bin/pip install --quiet atheris==3.0.0
	mkdir -p .fuzz/corpus
	[ -f .fuzz/keys/airlock.key ] || $(VENV)/bin/airlock keygen --out .fuzz/keys > /dev/null
	$(PY) -m tests.hostile .fuzz/corpus .fuzz/keys/airlock.key > /dev/null
	$(PY) tests/fuzz/fuzz_bundle.py .fuzz/corpus -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
