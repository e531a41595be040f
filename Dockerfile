# regsync container image.
#
#   docker build -t regsync .
#   docker run -v $PWD/sync.yaml:/etc/regsync/sync.yaml:ro -p 9469:9469 regsync
#
# The default command is the daemon (`regsync serve`) reading /etc/regsync/sync.yaml and
# serving /metrics, /healthz, /readyz and /status on port 9469 on every interface of the
# container. Any other command runs in its place: `docker run ... regsync once --json`.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtualenv with regsync and its dependencies, no compilers in the final image ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/regsync
WORKDIR /src
COPY pyproject.toml README.md ./
COPY regsync ./regsync
RUN /opt/regsync/bin/pip install --no-compile . \
    && /opt/regsync/bin/regsync --version

# -- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="regsync" \
      org.opencontainers.image.description="Container registry mirror and replication agent" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed, unprivileged uid/gid (Kubernetes runAsUser / fsGroup use 10001 too). Its home is the
# working directory: OCI layouts and a docker config.json for credentials can be mounted there.
RUN groupadd --system --gid 10001 regsync \
    && useradd --system --uid 10001 --gid regsync --home-dir /var/lib/regsync --create-home \
       --shell /usr/sbin/nologin regsync \
    && mkdir -p /etc/regsync \
    && install -d -o regsync -g regsync /var/lib/regsync/state
COPY --from=build /opt/regsync /opt/regsync
ENV PATH=/opt/regsync/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/regsync \
    REGSYNC_CONFIG=/etc/regsync/sync.yaml \
    REGSYNC_STATE_DIR=/var/lib/regsync/state
# The content index (which destination repositories hold which blobs): a hint that lets later
# runs mount instead of download. Losing it costs bytes, never correctness.
VOLUME ["/var/lib/regsync/state"]
WORKDIR /var/lib/regsync
USER 10001:10001
EXPOSE 9469
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:9469/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["regsync"]
CMD ["serve", "--config", "/etc/regsync/sync.yaml", "--listen", "0.0.0.0:9469"]
