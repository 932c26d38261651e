# syntax=docker/dockerfile:1
# The Bagula platform image: the API, Dagster's webserver, daemon and runs, dbt, detection, the
# simulator. Built from the repository as .dockerignore leaves it:
#   docker build -t bagula/platform:0.1.0 .
# Services choose their command (docker-compose.yml, deploy/k8s): `bagula api` (the default),
# `bagula dagster webserver|daemon`, `bagula db init --roles`. No ENTRYPOINT: Dagster's
# Kubernetes run launcher gives its Jobs a command of their own.

# Python 3.11, as the test suite runs; tag and digest of the multi-architecture index
# (docs/deployment.md says where the digest comes from).
FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d AS build
# The installer tests/deploy installs the same context with (tests/deploy/tools.txt).
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY . .
# A regular install (not editable) at the versions of constraints.txt, the Kubernetes run
# launcher included, into an environment the runtime stage copies whole.
RUN uv venv --python /usr/local/bin/python3 /opt/bagula \
    && uv pip install --no-cache --python /opt/bagula/bin/python --constraint constraints.txt ".[k8s]"
# The dbt project is data beside the environment (BAGULA_DBT_PROJECT_DIR), its manifest parsed
# here so that no container parses it at start (parsing never connects).
RUN cp -r dbt_project /opt/bagula/dbt_project \
    && BAGULA_DBT_PROJECT_DIR=/opt/bagula/dbt_project DBT_LOG_PATH=/tmp/dbt-logs \
       /opt/bagula/bin/python -c "from orchestration.dbt import ensure_manifest; ensure_manifest()" \
    && rm -rf /opt/bagula/dbt_project/logs

FROM python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
LABEL org.opencontainers.image.title="bagula-platform" \
      org.opencontainers.image.description="Bagula: ingest API, Dagster (marts, detection, alerts), dbt"
RUN groupadd --system --gid 10001 bagula \
    && useradd --system --uid 10001 --gid bagula --home-dir /var/lib/bagula --no-create-home \
       --shell /usr/sbin/nologin bagula \
    && mkdir -p /var/lib/bagula/dagster \
    && chown -R bagula:bagula /var/lib/bagula
COPY --from=build /opt/bagula /opt/bagula
# Writable at run time: /var/lib/bagula/dagster (Dagster's instance, a volume) and /tmp (dbt's
# build artefacts and logs); the rest may be mounted read-only.
ENV PATH=/opt/bagula/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/bagula \
    BAGULA_API_HOST=0.0.0.0 \
    BAGULA_METRICS_HOST=0.0.0.0 \
    BAGULA_DATA_DIR=/var/lib/bagula \
    BAGULA_DAGSTER_HOME=/var/lib/bagula/dagster \
    DAGSTER_HOME=/var/lib/bagula/dagster \
    BAGULA_DBT_PROJECT_DIR=/opt/bagula/dbt_project \
    DBT_TARGET_PATH=/tmp/dbt/target \
    DBT_LOG_PATH=/tmp/dbt/logs \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false \
    DO_NOT_TRACK=1
WORKDIR /var/lib/bagula
USER 10001:10001
EXPOSE 8000 9464 3000
# The API's readiness (its database answers); Dagster's services override it (docker-compose.yml).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BAGULA_API_PORT', '8000') + '/readyz', timeout=4)"]
CMD ["bagula", "api"]
