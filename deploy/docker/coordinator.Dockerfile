# syntax=docker/dockerfile:1
# The coordinator image: molhpo with the coordinator extra (Optuna, the study store, Redis,
# RDKit for the data-set checks, reports) and psycopg2 for a PostgreSQL store. No torch and no
# torch-geometric: the build fails if either is installed. Trainers run from the trainer
# images (deploy/docker/trainer.Dockerfile, trainer-cpu.Dockerfile).
#
# Build context: the repository root.
#   docker build -f deploy/docker/coordinator.Dockerfile -t molhpo/coordinator:0.1.0 .
# BuildKit reads deploy/docker/coordinator.Dockerfile.dockerignore for this build.

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/molhpo
ENV PATH=/opt/molhpo/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY molhpo ./molhpo
COPY coordinator ./coordinator
COPY trainer ./trainer
COPY storage ./storage
# A regular (not editable) install, at the versions the suite is tested with.
RUN pip install --no-cache-dir -c constraints.txt "./[coordinator,postgres]" \
    && python -c "import coordinator.server, molhpo.cli" \
    && python -c "import importlib.util as u; found = [m for m in ('torch', 'torch_geometric') if u.find_spec(m)]; assert not found, found"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="molhpo coordinator" \
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
