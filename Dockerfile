# The Bagula platform image: API, Dagster code, dbt, ml, simulator. Built from the repository
# as .dockerignore leaves it (no hand-kept list of packages to drift).
FROM python:3.11-slim
WORKDIR /app
COPY . .
RUN pip install --no-cache-dir -e .
ENV BAGULA_API_HOST=0.0.0.0
EXPOSE 8000
# Migrations are idempotent: applying them at every start keeps upgrades one step.
CMD ["sh", "-c", "bagula db upgrade && bagula api"]
