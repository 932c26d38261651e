# The Bagula platform image (API; later also Dagster and the transforms).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ingest_api ./ingest_api
RUN pip install --no-cache-dir .
ENV BAGULA_API_HOST=0.0.0.0
EXPOSE 8000
# Migrations are idempotent: applying them at every start keeps upgrades one step.
CMD ["sh", "-c", "bagula db upgrade && bagula api"]
