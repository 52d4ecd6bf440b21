# The two commands: `make run` (a demo box on :8080, data in ./var) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
BIN    := $(VENV)/bin
DATA   ?= ./var
HOST   ?= 0.0.0.0
PORT   ?= 8080

.PHONY: run test lint bench clean venv image rootfs lock

$(VENV)/bin/python:
	@$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: on Debian install it with 'apt-get install python3-venv'"; exit 1; }
	@$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[test,dev]'
	@touch $@ $(VENV)/.installed-run

venv: $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/vrlms-edge --data-dir $(DATA) demo --if-empty
	$(BIN)/vrlms-edge --data-dir $(DATA) serve --host $(HOST) --port $(PORT)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check vrlms_edge tests $(wildcard bench)
	$(BIN)/ruff format --check vrlms_edge tests $(wildcard bench)
	$(BIN)/mypy vrlms_edge $(wildcard bench)

test: lint
	$(BIN)/pytest -q -rs $(PYTEST_ARGS)

# Quick benchmark run (< 5 min): the box vs the Django Channels peer vs a bare aiohttp floor;
# writes bench/results/<date>.{json,md} and the README table. BENCH_ARGS=--full for everything.
bench: $(VENV)/.installed-test
	$(PY) -m bench.run $(BENCH_ARGS)

# The appliance (image-build/, docs/provisioning.md). Both need root, mmdebstrap, mtools,
# dosfstools and fdisk (sfdisk); no loop mounts.
ROOTFS := build/vrlms-edge-rootfs.tar
IMAGE  := build/vrlms-edge.img
IMAGE_INPUTS := pyproject.toml image-build/requirements.lock $(wildcard image-build/*.sh) \
	$(shell find vrlms_edge systemd image-build/overlay image-build/initramfs -type f -not -name '*.pyc' 2>/dev/null)

rootfs: $(ROOTFS)
$(ROOTFS): $(IMAGE_INPUTS)
	@mkdir -p build
	image-build/build-rootfs.sh $@

image: $(IMAGE)
$(IMAGE): $(ROOTFS) image-build/build-image.sh
	image-build/build-image.sh $(ROOTFS) $@ $(PROVISION)

# Re-lock the image's dependencies: pip freeze of a clean venv with the package installed.
lock:
	rm -rf build/lock-venv && /usr/bin/python3 -m venv build/lock-venv
	build/lock-venv/bin/pip install -q .
	{ echo "# Locked runtime dependencies of the image's /opt/vrlms-edge venv."; \
	  echo "# Regenerate: make lock (pip freeze of a clean venv with the package installed)."; \
	  build/lock-venv/bin/pip freeze --exclude vrlms-edge; } > image-build/requirements.lock
	rm -rf build/lock-venv

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
