# The Bagula platform image: API, transforms (dbt), simulator.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ingest_api ./ingest_api
COPY orchestration ./orchestration
COPY simulator ./simulator
COPY sdk ./sdk
COPY dbt_project ./dbt_project
RUN pip install --no-cache-dir .
ENV BAGULA_API_HOST=0.0.0.0 BAGULA_DBT_PROJECT_DIR=/app/dbt_project
EXPOSE 8000
# Migrations are idempotent: applying them at every start keeps upgrades one step.
CMD ["sh", "-c", "bagula db upgrade && bagula api"]
