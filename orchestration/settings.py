"""Orchestration's configuration (marts, detection, alerts), read once from the environment."""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class OrchestrationSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BAGULA_", extra="ignore")

    database_url: str | None = None

    # Critical verdicts are posted, once each, to this Slack-compatible webhook; unset:
    # alerts are kept (status pending) but not sent.
    alert_webhook_url: str | None = None
    alert_timeout_s: float = Field(default=10.0, gt=0)
    # Attempts per delivery pass; what is still undelivered is retried by the next run.
    alert_attempts: int = Field(default=4, gt=0)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("BAGULA_DATABASE_URL is not set (e.g. postgresql://user:pass@host:5432/bagula)")
        return self.database_url


@lru_cache(maxsize=1)
def get_orchestration_settings() -> OrchestrationSettings:
    return OrchestrationSettings()
