# syntax=docker/dockerfile:1
# The coordinator image (CPU): the whole molhpo package with a CPU build of torch. It runs
# `molhpo trainer --device cpu` as well (deploy/k8s/overlays/cpu uses it for trainers).
#
# Build context: the repository root.
#   docker build -f deploy/docker/coordinator.Dockerfile -t molhpo/coordinator:0.1.0 .
# BuildKit reads deploy/docker/coordinator.Dockerfile.dockerignore for this build.
# TORCH_INDEX: a package index with CPU-only torch wheels (a mirror of it in air-gapped builds).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/molhpo
ENV PATH=/opt/molhpo/bin:$PATH
# torch first, pinned, from the CPU index, so the project's torch==2.13.0 is already satisfied
# and pip does not pull the CUDA build from PyPI.
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY molhpo ./molhpo
COPY coordinator ./coordinator
COPY trainer ./trainer
COPY storage ./storage
# psycopg2 for the PostgreSQL study store; a regular (not editable) install
RUN pip install --no-cache-dir "./[postgres]" \
    && python -c "import torch, molhpo.cli; assert torch.__version__.startswith('${TORCH_VERSION}')"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="molhpo coordinator (CPU)" \
      org.opencontainers.image.source="https://example.com/molhpo" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 molhpo \
    && useradd --system --uid 10001 --gid molhpo --home-dir /var/lib/molhpo --no-create-home \
       --shell /usr/sbin/nologin molhpo \
    && mkdir -p /var/lib/molhpo \
    && chown molhpo:molhpo /var/lib/molhpo
COPY --from=build /opt/molhpo /opt/molhpo
# Writable places are /var/lib/molhpo (state) and /tmp; the pods mount emptyDirs there and run
# with a read-only root file system.
ENV PATH=/opt/molhpo/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/molhpo \
    XDG_CACHE_HOME=/tmp/.cache \
    MPLCONFIGDIR=/tmp/.cache/matplotlib \
    MOLHPO_COORDINATOR_STATE_DIR=/var/lib/molhpo
WORKDIR /var/lib/molhpo
USER 10001:10001
EXPOSE 50051 9090
# No HEALTHCHECK: Kubernetes probes the gRPC health service (deploy/k8s); with plain Docker use
# `grpc_health_probe` or `molhpo study list` from outside.
ENTRYPOINT ["molhpo"]
CMD ["coordinator", "--listen", "0.0.0.0:50051", "--metrics-host", "0.0.0.0", "--metrics-port", "9090"]
