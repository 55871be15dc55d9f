# The project image: the base_image of every KFP component (components.DEFAULT_IMAGE), and a
# self-contained environment for the CLI. Built by `make image` (`dyn-adapter pipeline image`),
# which first gathers the offline inputs on the host into build/image/:
#   wheels/  every pinned wheel: requirements/base.txt, requirements/no-deps.txt, and the
#            project's build requirements (torch from PyTorch's CPU index for the cpu variant,
#            PyPI's CUDA build otherwise);
#   debs/    the Debian package dataset-fashion-mnist.
# The build itself needs no network (`make image` builds with --network none), as on an
# air-gapped cluster: everything is installed from those bind-mounted inputs. The packaged
# DINOv2 weights are converted at build time, so containers start offline.

# The official image, or the equivalent that `make image` builds from Debian packages where it
# cannot be pulled (dyn-adapter-base:3.11-bookworm).
ARG BASE_IMAGE=python:3.11.17-slim-bookworm
FROM ${BASE_IMAGE}

# cpu or cuda: which torch build build/image/wheels holds (checked after the install).
ARG TORCH_VARIANT=cpu

LABEL org.opencontainers.image.title="dyn-adapter" \
      org.opencontainers.image.description="Dyn-Adapter: early-exit PETL vision transformers (KFP components, CLI)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.dyn-adapter.torch-variant="${TORCH_VARIANT}"

# Offline by design (no model hub, no telemetry), as the Makefile exports. DYN_ADAPTER_CACHE is
# where the converted weights are written at build time and found at run time. MPLCONFIGDIR
# keeps matplotlib's cache writable with a read-only root file system.
ENV HF_HUB_OFFLINE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 \
    DYN_ADAPTER_CACHE=/opt/dyn-adapter/cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONUNBUFFERED=1

# Fashion-MNIST (MIT) from its Debian package: /usr/share/datasets/fashion-mnist (linked below to
# params.yaml's data.path).
RUN --mount=type=bind,source=build/image/debs,target=/tmp/build/debs \
    dpkg -i /tmp/build/debs/dataset-fashion-mnist_*.deb \
 && test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

WORKDIR /opt/dyn-adapter/src

# Dependencies first: this layer is rebuilt only when the pinned lists (and so the wheels) change.
COPY requirements/base.txt requirements/no-deps.txt requirements/
RUN --mount=type=bind,source=build/image/wheels,target=/tmp/build/wheels \
    set -eu; \
    case "${TORCH_VARIANT}" in cpu|cuda) ;; \
      *) echo "TORCH_VARIANT must be cpu or cuda, got '${TORCH_VARIANT}'" >&2; exit 1 ;; \
    esac; \
    wheels="--no-index --find-links /tmp/build/wheels"; \
    pip install $wheels -r requirements/base.txt; \
    pip install $wheels --no-deps -r requirements/no-deps.txt; \
    python -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; \
    python -c "import sys, torch; cpu = torch.version.cuda is None; sys.exit(0 if cpu == ('${TORCH_VARIANT}' == 'cpu') else 'the wheels hold the wrong torch build for TORCH_VARIANT=${TORCH_VARIANT}')"

# The project itself (dependencies are all above). components/ and pipeline/ are packaged too.
COPY pyproject.toml README.md params.yaml ./
COPY dyn_adapter/ dyn_adapter/
COPY components/ components/
COPY pipeline/ pipeline/
RUN --mount=type=bind,source=build/image/wheels,target=/tmp/build/wheels \
    pip install --no-index --find-links /tmp/build/wheels --no-deps . \
 && rm -rf build ./*.egg-info \
 && python -c "import dyn_adapter.stages.train, dyn_adapter.mlops.runs, components.shim, mlflow, kfp, optuna"

# Convert the packaged weights now, so containers start offline and without the conversion;
# the converted file is read-only to the user the containers run as.
RUN dyn-adapter convert-weights \
 && chmod -R a+rX,a-w "${DYN_ADAPTER_CACHE}"

# A non-root user (uid 1000). The KFP launcher writes artifacts under /gcs, /minio and /s3
# (the local mounts of each artifact store), so those exist and belong to the user; so does
# the mirror of s3:// data sources ($DYN_ADAPTER_CACHE/s3).
# /workspace is the working directory (KFP runs components there too): params.yaml's relative
# data.path (data/fashion-mnist) resolves to the Debian package's files.
RUN useradd --uid 1000 --user-group --create-home --home-dir /home/dyn --shell /bin/bash dyn \
 && mkdir -p /gcs /minio /s3 /workspace/data "${DYN_ADAPTER_CACHE}/s3" \
 && ln -s /usr/share/datasets/fashion-mnist /workspace/data/fashion-mnist \
 && cp params.yaml /workspace/params.yaml \
 && chown 1000:1000 /gcs /minio /s3 /workspace /workspace/data /workspace/params.yaml \
      "${DYN_ADAPTER_CACHE}/s3"

ENV HOME=/home/dyn
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
WORKDIR /workspace

# No ENTRYPOINT: KFP runs each component's own command, and `docker run IMAGE dyn-adapter ...`
# runs the CLI.
