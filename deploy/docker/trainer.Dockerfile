# syntax=docker/dockerfile:1
# The GPU trainer image: CUDA user-space base, Python 3.11 and torch CUDA wheels (they
# bundle the CUDA runtime, cuBLAS and cuDNN libraries, so the `base` flavour of the CUDA image is
# enough: it carries the NVIDIA container runtime settings). The node needs the NVIDIA driver
# and device plugin; keep TORCH_INDEX's CUDA version at or below what the driver supports.
#
# Build context: the repository root.
#   docker build -f deploy/docker/trainer.Dockerfile -t molhpo/trainer-cuda:0.1.0 .
# BuildKit reads deploy/docker/trainer.Dockerfile.dockerignore for this build.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04

FROM ${CUDA_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# DL3008 (pin apt versions): the base image is pinned by tag; Ubuntu drops superseded package
# versions from its archive, so exact pins would break rebuilds without adding reproducibility.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/molhpo
ENV PATH=/opt/molhpo/bin:$PATH
WORKDIR /src
COPY constraints.txt ./
# torch first, at the version constraints.txt pins, from the CUDA index, so the install below
# keeps it and does not pull another build from PyPI.
RUN pip install --no-cache-dir -c constraints.txt torch --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY molhpo ./molhpo
COPY coordinator ./coordinator
COPY trainer ./trainer
COPY storage ./storage
# The trainer extra; nvidia-ml-py (gpu) for the GPU utilisation and memory metrics (NVML).
RUN pip install --no-cache-dir -c constraints.txt "./[trainer,gpu]" \
    && python -c "import torch, trainer.server, molhpo.cli; print(torch.__version__)"

FROM ${CUDA_IMAGE}
LABEL org.opencontainers.image.title="molhpo trainer (CUDA)" \
      org.opencontainers.image.source="https://example.com/molhpo" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV DEBIAN_FRONTEND=noninteractive
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# DL3008: as above (the runtime needs the same interpreter the venv was built with).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 molhpo \
    && useradd --system --uid 10001 --gid molhpo --home-dir /tmp --no-create-home \
       --shell /usr/sbin/nologin molhpo
COPY --from=build /opt/molhpo /opt/molhpo
# The pods run with a read-only root file system and an emptyDir at /tmp: every cache goes there.
ENV PATH=/opt/molhpo/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    TORCH_HOME=/tmp/.cache/torch \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
WORKDIR /tmp
USER 10001:10001
EXPOSE 50052 9091
# No HEALTHCHECK: Kubernetes probes the gRPC health service (deploy/k8s).
ENTRYPOINT ["molhpo"]
CMD ["trainer", "--listen", "0.0.0.0:50052", "--device", "cuda", "--metrics-host", "0.0.0.0", "--metrics-port", "9091"]
