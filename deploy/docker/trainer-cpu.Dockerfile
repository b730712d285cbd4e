# syntax=docker/dockerfile:1
# The CPU trainer image: Python 3.11 and torch CPU wheels, for trainers without a GPU
# (deploy/k8s/overlays/cpu). The CUDA trainer image is deploy/docker/trainer.Dockerfile.
#
# Build context: the repository root.
#   docker build -f deploy/docker/trainer-cpu.Dockerfile -t molhpo/trainer-cpu:0.1.0 .
# BuildKit reads deploy/docker/trainer-cpu.Dockerfile.dockerignore for this build.
# TORCH_INDEX: a package index with CPU-only torch wheels (a mirror of it in air-gapped builds).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/molhpo
ENV PATH=/opt/molhpo/bin:$PATH
WORKDIR /src
COPY constraints.txt ./
# torch first, at the version constraints.txt pins, from the CPU index, so the install below
# keeps it and does not pull the CUDA build from PyPI.
RUN pip install --no-cache-dir -c constraints.txt torch --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY molhpo ./molhpo
COPY coordinator ./coordinator
COPY trainer ./trainer
COPY storage ./storage
# The trainer extra; a regular (not editable) install.
RUN pip install --no-cache-dir -c constraints.txt "./[trainer]" \
    && python -c "import torch, trainer.server, molhpo.cli; print(torch.__version__)"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="molhpo trainer (CPU)" \
      org.opencontainers.image.source="https://example.com/molhpo" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 molhpo \
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
    MPLCONFIGDIR=/tmp/.cache/matplotlib
WORKDIR /tmp
USER 10001:10001
EXPOSE 50052 9091
# No HEALTHCHECK: Kubernetes probes the gRPC health service (deploy/k8s).
ENTRYPOINT ["molhpo"]
CMD ["trainer", "--listen", "0.0.0.0:50052", "--device", "cpu", "--metrics-host", "0.0.0.0", "--metrics-port", "9091"]
