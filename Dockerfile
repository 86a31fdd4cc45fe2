# syntax=docker/dockerfile:1
# Climatik: one image for `climatik monitor`, `climatik recommend` and `climatik tune`.
ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml setup.cfg README.md LICENSE ./
COPY climatik ./climatik
RUN python -m pip install --no-cache-dir --upgrade pip build \
 && python -m build --wheel --outdir /wheels . \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels /wheels/climatik-*.whl

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="climatik" \
      org.opencontainers.image.description="Kubernetes-native power capping for GPU workloads" \
      org.opencontainers.image.source="https://github.com/climatik-project/climatik" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links=/wheels climatik \
 && rm -rf /wheels \
 && useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin climatik
USER 65532:65532
ENV PYTHONUNBUFFERED=1
ENTRYPOINT ["climatik"]
CMD ["--help"]
