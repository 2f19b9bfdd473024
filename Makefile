# airlock: `make demo` runs the main job end to end, `make test` the test suite.
# Both install what they need on a fresh Debian machine (apt packages, then a venv).

VENV        ?= .venv
PYTHON      ?= python3
PY          := $(VENV)/bin/python
APT_PACKAGES = containerd runc docker-registry skopeo umoci busybox-static openssl zstd iproute2 tar curl systemd jq golang-go chromium strace xfsprogs e2fsprogs util-linux
TOOLS        = containerd ctr runc docker-registry skopeo umoci busybox openssl zstd ip tar curl systemd-analyze jq go chromium strace mkfs.xfs mkfs.ext4 filefrag fincore
VERSION     := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
NODE_PYZ     = dist/airlock-node-$(VERSION).pyz
NODE_SOURCES = $(shell find bundle installer manifests -type f ! -name '*.pyc') builder/zipapp.py pyproject.toml
# The node code runs on the nodes' system Pythons: nothing newer than 3.9 may creep in. typer evaluates the
# node CLI's annotations at run time (on 3.9 without `from __future__ import annotations`): no `X | None` there.
NODE_CODE    = bundle installer
VERMIN       = $(VENV)/bin/vermin -t=3.9- --no-tips --violations

.PHONY: deps containerd-sid bench-deps venv dist check-arm64 test demo lint bench fuzz clean

deps:
	@missing=""; for tool in $(TOOLS); do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages for:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y $(APT_PACKAGES); \
	fi

# containerd 2.x for the tests and the demo: Debian sid's package unpacked into .dist-cache/containerd-sid with
# apt-get download of containerd=2.1.9+ds1-5 through a private source list (the archive named by this machine's apt configuration, suite sid);
# nothing is installed and /etc is not touched. Off CI a failure leaves those tests skipping; with CI=true it fails.
containerd-sid: venv
	$(PY) -m tests.debian_sid

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

# The node side as one file for Python 3.9+ on amd64 and arm64; pinned wheels are fetched once into .dist-cache.
dist: $(NODE_PYZ)

$(NODE_PYZ): $(VENV)/.installed $(NODE_SOURCES)
	$(PY) -m builder.zipapp --output $@

# Not run by CI: the pyz on arm64 under qemu-user, with Debian 12's arm64 python3 unpacked into a sysroot (as root;
# a few minutes the first time). It makes a CA and a serving certificate: cryptography's aarch64 code at work.
ARM64_ROOT ?= .dist-cache/arm64-root
check-arm64: dist
	command -v qemu-aarch64-static >/dev/null && command -v debootstrap >/dev/null || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-user-static debootstrap; }
	[ -x $(ARM64_ROOT)/usr/bin/python3 ] || { debootstrap --foreign --arch=arm64 --variant=minbase --include=python3 bookworm $(ARM64_ROOT) && \
		for deb in $(ARM64_ROOT)/var/cache/apt/archives/*.deb; do dpkg-deb -x $$deb $(ARM64_ROOT); done; }
	rm -rf .dist-cache/arm64-check && mkdir -m 0700 .dist-cache/arm64-check
	AIRLOCK_PYZ_CACHE=$(CURDIR)/.dist-cache/arm64-check/cache qemu-aarch64-static -L $(ARM64_ROOT) $(ARM64_ROOT)/usr/bin/python3 -I $(NODE_PYZ) \
		registry cert --ca-out $(CURDIR)/.dist-cache/arm64-check/pki --name 127.0.0.1
	openssl verify -CAfile .dist-cache/arm64-check/pki/ca.crt .dist-cache/arm64-check/pki/registry.crt
	find .dist-cache/arm64-check/cache -name '*aarch64*' -o -name '*.abi3.so' | grep -q linux-aarch64

# Independent test files run in parallel processes (pytest-xdist); a file's module fixtures stay in one process.
TEST_WORKERS ?= 3
test: deps venv dist containerd-sid
	$(VENV)/bin/ruff check airlock builder bundle installer tests bench
	$(VERMIN) $(NODE_CODE)
	$(VERMIN) --eval-annotations --feature union-types installer/cli.py
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: deps venv dist containerd-sid
	$(PY) -m tests.demo

lint: venv
	$(VENV)/bin/ruff check airlock builder bundle installer tests bench
	$(VERMIN) $(NODE_CODE)
	$(VERMIN) --eval-annotations --feature union-types installer/cli.py

# An installed airlock has its bytecode compiled (pip does it at install); an editable checkout run with
# PYTHONDONTWRITEBYTECODE would compile every module on every build it times.
bench: deps bench-deps venv dist containerd-sid
	$(PY) -m compileall -q airlock builder bundle installer
	$(PY) -m bench.build_bench
	$(PY) -m bench.registry_bench
	$(PY) -m bench.registry_flood_bench
	$(PY) -m bench.install_bench
	$(PY) -m bench.upgrade_bench
	$(PY) -m bench.split_bench
	$(PY) -m bench.from_bench
	$(PY) -m bench.contents_bench
	$(PY) -m bench.provenance_bench
	$(PY) -m bench.fleet_bench

# Not run by CI: a bounded fuzzing session of the bundle.json parser and the tar reader.
FUZZ_SECONDS ?= 60
fuzz: deps venv
	$(VENV)/bin/pip install --quiet atheris==3.0.0
	mkdir -p .fuzz/corpus
	[ -f .fuzz/keys/airlock.key ] || $(VENV)/bin/airlock keygen --out .fuzz/keys > /dev/null
	$(PY) -m tests.hostile .fuzz/corpus .fuzz/keys/airlock.key > /dev/null
	$(PY) tests/fuzz/fuzz_bundle.py .fuzz/corpus -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info dist
