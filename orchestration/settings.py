"""Orchestration's configuration (marts, detection, alerts), read once from the environment."""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrchestrationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BAGULA_", extra="ignore")

    database_url: str | None = None

    # Incident alerts go to this Slack-compatible webhook, once each, unless their project has
    # a route of its own (alert_routes); unset: they are kept (status pending) but not sent.
    alert_webhook_url: str | None = None
    alert_timeout_s: float = Field(default=10.0, gt=0)
    # Attempts per delivery pass; what is still undelivered is retried by the next run.
    alert_attempts: int = Field(default=4, gt=0)
    # Incident events below this severity are not alerted (projects may set their own: alert_routes).
    alert_min_severity: str = Field(default="critical", pattern="^(minor|major|critical)$")
    # Superset as its users reach it (e.g. https://bagula.example.com/superset): alerts link to
    # the dashboards there. Unset: no links.
    superset_public_url: str | None = None

    # The live path (live.py): how often it looks for new batches when idle, and how long the
    # sensor leaves new sessions to it after its last pass before launching runs itself.
    live_poll_s: float = Field(default=0.5, gt=0)
    live_grace_s: float = Field(default=30.0, gt=0)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("BAGULA_DATABASE_URL is not set (e.g. postgresql://user:pass@host:5432/bagula)")
        return self.database_url


@lru_cache(maxsize=1)
def get_orchestration_settings() -> OrchestrationSettings:
    return OrchestrationSettings()
