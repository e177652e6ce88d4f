# litwatch container image.
#
#   docker build --build-arg VERSION="$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)" -t litwatch .
#   docker build --build-arg BASE=localhost/litwatch-base:bookworm -t litwatch .
#
# BASE is any Debian-like image with python3 (>= 3.11) and its venv module; the
# default is the official slim Python image. The same BASE is used for both stages,
# because the virtualenv built in the first is copied as it is into the second.

ARG BASE=python:3.11-slim

# ---- builder: build the wheel, install it with its dependencies into /opt/venv ----
FROM ${BASE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src
# Only pyproject.toml, README.md, src/ and deploy/healthcheck.py (see .dockerignore).
COPY . .

# python3, not python: Debian's own python3 has no `python`. A venv also sidesteps
# Debian's "externally managed" system pip. pip and setuptools are not needed at run time.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install --no-cache-dir --no-compile "$(ls /wheels/litwatch-*.whl)[postgresql]" \
    && /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
    && install -m 0755 deploy/healthcheck.py /opt/venv/bin/litwatch-healthcheck

# ---- runtime: the base image, the venv, an unprivileged user ----
FROM ${BASE}

# the version is pyproject.toml's; scripts pass it (--build-arg VERSION=...), never repeated here
ARG VERSION=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="litwatch" \
      org.opencontainers.image.description="Scheduled literature and approvals monitoring: PubMed, Crossref, RSS/Atom feeds, Drugs@FDA and EMA; errata and retraction alerts, e-mailed digests." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="MIT"

RUN groupadd --gid 10001 litwatch \
    && useradd --uid 10001 --gid litwatch --no-log-init --no-create-home --home-dir /data \
       --shell /usr/sbin/nologin litwatch \
    && mkdir -p /data /config \
    && chown litwatch:litwatch /data

COPY --from=builder /opt/venv /opt/venv

# No secrets here: SMTP password, NCBI API key and database password come from the
# environment at run time (${NAME} in the config).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    LITWATCH_CONFIG=/config/litwatch.yaml

# /data: the SQLite database (the default sqlite:///litwatch.db is relative) and the
# file outbox. /config/litwatch.yaml is mounted read-only.
WORKDIR /data
VOLUME ["/data"]
USER 10001:10001

# Serves /healthz when the config sets health_port (with health_bind: 0.0.0.0, as
# deploy/litwatch.yaml does, so that the host can probe it too), else runs `litwatch status`.
# 8080: health_port (/healthz, /metrics); 8090: web.port (the web view, with its own
# /healthz), when the config sets them.
EXPOSE 8080 8090
HEALTHCHECK --interval=30s --timeout=10s --start-period=20s --retries=3 \
    CMD ["litwatch-healthcheck"]

ENTRYPOINT ["litwatch"]
CMD ["run"]
