"""The API's configuration, read once from the environment (prefix ``BAGULA_``).

Only what the application itself reads lives here; how it is served (host, port,
workers) is the platform's business (``bagula.settings``).
"""

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BAGULA_", extra="ignore")

    database_url: str | None = None

    # Whole-request limits on POST /v1/sessions/ingest.
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_batch_sessions: int = Field(default=1000, gt=0)

    pool_min_size: int = Field(default=2, ge=0)
    pool_max_size: int = Field(default=10, gt=0)
    # Seconds a request waits for a database connection before answering 503.
    db_timeout_s: float = Field(default=5.0, gt=0)
    # What 503 answers tell clients to wait before retrying.
    retry_after_s: int = Field(default=5, gt=0)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("BAGULA_DATABASE_URL is not set (e.g. postgresql://user:pass@host:5432/bagula)")
        return self.database_url


@lru_cache(maxsize=1)
def get_api_settings() -> ApiSettings:
    return ApiSettings()
