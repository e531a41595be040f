# regsync container image.
#
#   make image                      # or: docker build -t regsync .
#   docker run -v $PWD/sync.yaml:/etc/regsync/sync.yaml:ro -p 9469:9469 regsync
#
# The default command is the daemon (`regsync serve`) reading /etc/regsync/sync.yaml and
# serving /metrics, /healthz, /readyz and /status on $REGSYNC_LISTEN (0.0.0.0:9469: every
# interface of the container). Any other command runs in its place: `docker run ... regsync once`.
#
# Dependencies come from requirements.lock (pinned, with hashes; `make lock` refreshes it).
# Behind a site's own package mirror:
#   --build-arg PIP_INDEX_URL=https://pypi.example.org/simple   (no credentials in build args)
#   --secret id=pip-ca,src=/path/ca-bundle.pem                  (a CA bundle pip trusts)
#   --secret id=pip-conf,src=/path/pip.conf                     (index URLs with credentials)
# Secrets are mounted for the install step only; nothing of them lands in the image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: a virtualenv with regsync and its locked dependencies ----------------------------
FROM ${PYTHON_IMAGE} AS build
# No defaults: unset, pip uses PyPI, or the index-url of the pip-conf secret.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INPUT=1
RUN python -m venv /opt/regsync
WORKDIR /src
COPY requirements.lock pyproject.toml README.md ./
COPY regsync ./regsync
# Locked dependencies by hash (setuptools, the build backend, among them), then regsync itself
# from the copied sources without any index; `pip check` proves the lock satisfies
# pyproject.toml. pip and setuptools leave the virtualenv before it is copied. regsync is
# byte-compiled here: the runtime cannot write bytecode (PYTHONDONTWRITEBYTECODE, a read-only
# user), so without it every start compiled its ~80 modules again (~0.1 s of CPU per `once`).
RUN --mount=type=secret,id=pip-ca --mount=type=secret,id=pip-conf \
    if [ -s /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi \
    && if [ -s /run/secrets/pip-conf ]; then export PIP_CONFIG_FILE=/run/secrets/pip-conf; fi \
    && /opt/regsync/bin/pip install --require-hashes --no-deps --only-binary :all: \
       -r requirements.lock \
    && /opt/regsync/bin/pip install --no-index --no-deps --no-build-isolation . \
    && /opt/regsync/bin/pip check \
    && /opt/regsync/bin/pip uninstall --yes setuptools pip \
    && /opt/regsync/bin/regsync --version

# -- runtime -----------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="regsync" \
      org.opencontainers.image.description="Container registry mirror and replication agent" \
      org.opencontainers.image.licenses="Apache-2.0"
# No installer in the runtime image: the base image's pip, setuptools and wheel go. A fixed,
# unprivileged uid/gid (Kubernetes runAsUser / fsGroup use 10001 too), a regular account (a
# uid above SYS_UID_MAX is no system account), no lastlog entry. Its home is the working
# directory: OCI layouts and a docker config.json for credentials can be mounted there.
RUN python -m pip uninstall --yes --no-input pip setuptools wheel \
    && groupadd --gid 10001 regsync \
    && useradd --uid 10001 --gid regsync --no-log-init --no-create-home \
       --home-dir /var/lib/regsync --shell /usr/sbin/nologin regsync \
    && mkdir -p /etc/regsync \
    && install -d -o regsync -g regsync /var/lib/regsync /var/lib/regsync/state
COPY --from=build /opt/regsync /opt/regsync
ENV PATH=/opt/regsync/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/var/lib/regsync \
    REGSYNC_CONFIG=/etc/regsync/sync.yaml \
    REGSYNC_STATE_DIR=/var/lib/regsync/state \
    REGSYNC_LISTEN=0.0.0.0:9469
# The content index (which destination repositories hold which blobs): a hint that lets later
# runs mount instead of download. Losing it costs bytes, never correctness.
VOLUME ["/var/lib/regsync/state"]
WORKDIR /var/lib/regsync
USER 10001:10001
EXPOSE 9469
# Probes /healthz on the address `serve` listens on ($REGSYNC_LISTEN; a wildcard on loopback).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "regsync.healthcheck"]
ENTRYPOINT ["regsync"]
CMD ["serve", "--config", "/etc/regsync/sync.yaml"]
