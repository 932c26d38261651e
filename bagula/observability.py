"""How `bagula api` exposes itself to operators: JSON log lines and the metrics port."""

from __future__ import annotations

import logging
import tempfile
from typing import Any

import psycopg
from prometheus_client import start_http_server

from ingest_api.store.freshness import marts_lag_seconds
from ingest_api.telemetry import scrape_registry

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def log_config(log_format: str) -> dict[str, Any]:
    """uvicorn's logging configuration (applied in every worker): JSON lines or plain text."""
    formatter: dict[str, Any] = (
        {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
         "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}}
        if log_format == "json" else {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"})
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    quiet = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return {
        "version": 1, "disable_existing_loggers": False,
        "formatters": {"default": formatter}, "handlers": {"default": handler},
        "loggers": {"uvicorn": quiet, "uvicorn.error": quiet, "bagula": quiet, "ingest_api": quiet,
                    # One line per request is ours (with its request id); uvicorn's would repeat it.
                    "uvicorn.access": {**quiet, "level": "WARNING"}},
    }


def serve_metrics(host: str, port: int, database_url: str) -> str | None:
    """Start the metrics port in this (the supervising) process; returns the directory the
    workers must count in (set it as PROMETHEUS_MULTIPROC_DIR before they start), or None when
    the port cannot be had: the API serves on without metrics rather than not at all."""
    directory = tempfile.mkdtemp(prefix="bagula-metrics-")

    def lag() -> float:
        with psycopg.connect(database_url, connect_timeout=2) as conn:
            return marts_lag_seconds(conn)

    try:
        start_http_server(port, addr=host, registry=scrape_registry(directory, lag))
    except OSError as exc:
        logging.getLogger("bagula").error("metrics not served: port %s:%s: %s", host, port, exc)
        return None
    return directory
