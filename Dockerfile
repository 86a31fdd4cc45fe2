# syntax=docker/dockerfile:1
# Climatik: one image for `climatik monitor`, `climatik recommend` and `climatik tune`.
#   docker build --build-arg VERSION=0.1.0 -t ghcr.io/climatik-project/climatik:0.1.0 .
# Release builds should also pin the base by digest: --build-arg PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# Build the wheel and install it with its runtime dependencies (no test or dev extras) into a virtualenv, so the
# final stage copies one directory and carries neither build tools nor wheel files.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
RUN python -m pip install "build>=1.2,<2" \
 && python -m venv /opt/climatik
WORKDIR /src
COPY pyproject.toml setup.cfg README.md LICENSE ./
COPY climatik ./climatik
RUN python -m build --wheel --outdir /dist . \
 && /opt/climatik/bin/pip install /dist/climatik-*.whl

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="climatik" \
      org.opencontainers.image.description="Kubernetes-native power capping for GPU workloads" \
      org.opencontainers.image.source="https://github.com/climatik-project/climatik" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# Non-root by default; the tuner's DaemonSet runs as root with SYS_ADMIN because setting clocks needs it.
RUN groupadd --gid 65532 climatik \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin climatik
COPY --from=build /opt/climatik /opt/climatik
# Bytecode was compiled at install time; the root filesystem is read-only in the cluster.
ENV PATH=/opt/climatik/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
ENTRYPOINT ["climatik"]
CMD ["--help"]
