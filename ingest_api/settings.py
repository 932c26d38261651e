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

    # Whole-request limits. The ingest body's limit applies to the bytes sent and again after
    # gzip decompression; every other endpoint takes small JSON bodies only.
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    max_small_body_bytes: int = Field(default=64 * 1024, gt=0)
    max_batch_sessions: int = Field(default=1000, gt=0)

    # What one session may hold.
    max_turns: int = Field(default=500, gt=0)
    max_llm_calls: int = Field(default=2000, gt=0)
    max_tool_calls: int = Field(default=5000, gt=0)
    max_tags: int = Field(default=64, ge=0)
    max_metadata_bytes: int = Field(default=64 * 1024, gt=0)
    # Session times must fall within [now - max age, now + max future]: a unit mistake or a
    # clock far off would otherwise scatter rows over distant time partitions.
    max_session_age_days: float = Field(default=365, gt=0)
    max_session_future_s: float = Field(default=86_400, ge=0)
    # Errors listed per rejected session (the rest are counted in errorCount).
    max_errors_per_session: int = Field(default=20, gt=0)

    # Requests per API key, per API process (limits' notation, e.g. "100/second;3000/minute").
    rate_limit_per_key: str = "100/second"
    # Failed authentications per client address, per API process, before it gets 429s.
    failed_auth_limit: str = "20/minute"
    # Seconds a key lookup (found or unknown) is reused; a revoked key is refused within this.
    auth_cache_s: float = Field(default=5.0, ge=0)

    pool_min_size: int = Field(default=2, ge=0)
    pool_max_size: int = Field(default=10, gt=0)
    # Seconds a request waits for a database connection before answering 503.
    db_timeout_s: float = Field(default=5.0, gt=0)
    # What 503 answers tell clients to wait before retrying.
    retry_after_s: int = Field(default=5, gt=0)

    # OpenTelemetry (POST /v1/traces; docs/otlp.md). A session is complete once no span of it
    # has arrived for the quiet period; spans whose parent has not arrived hold it back until
    # the longest wait. Every API process runs an assembler unless told not to (any number of
    # them share the work).
    otlp_session_quiet_s: float = Field(default=30.0, gt=0)
    otlp_session_max_wait_s: float = Field(default=600.0, gt=0)
    otlp_assembler: bool = True
    otlp_assemble_interval_s: float = Field(default=1.0, gt=0)
    # Traces claimed per assembly transaction.
    otlp_assemble_batch: int = Field(default=500, gt=0)

    # Retention (docs/privacy.md): days kept for projects without their own setting; raw
    # payloads, marts (figures) and verdicts. Applied by `bagula retention apply`, and by the
    # live path (`bagula pipeline live`) at most every retention_every_s.
    retention_raw_days: int = Field(default=90, gt=0, le=36500)
    retention_marts_days: int = Field(default=395, gt=0, le=36500)
    retention_verdicts_days: int = Field(default=395, gt=0, le=36500)
    retention_every_s: float = Field(default=3600.0, gt=0)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise RuntimeError("BAGULA_DATABASE_URL is not set (e.g. postgresql://user:pass@host:5432/bagula)")
        return self.database_url


@lru_cache(maxsize=1)
def get_api_settings() -> ApiSettings:
    return ApiSettings()
