"""The worker's settings: one class, read from the environment and an optional `.env` file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    """Contract names (section 6) keep their own names; everything else is `WORKER_*`."""

    model_config = SettingsConfigDict(
        env_prefix="WORKER_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    database_url: SecretStr = Field(
        SecretStr("postgresql://postgres@127.0.0.1:5432/postgres"),
        validation_alias="DATABASE_URL",
    )
    sqs_queue_url: str = Field(
        "http://127.0.0.1:9324/000000000000/streaming-jobs", validation_alias="SQS_QUEUE_URL"
    )
    sqs_endpoint_url: str | None = Field(None, validation_alias="AWS_ENDPOINT_URL_SQS")
    aws_region: str = Field(
        "us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )

    models_file: Path = Path("config/models.yaml")
    allow_unlisted_models: bool = False
    # Hosts whose media URLs LiteLLM may fetch for providers that need the bytes inline
    # (contract 8): comma-separated in WORKER_MEDIA_URL_HOSTS, none by default.
    media_url_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    concurrency: int = Field(16, ge=1, le=10_000)
    metrics_port: int = Field(9100, ge=0, le=65535)
    shutdown_grace_s: float = Field(25.0, ge=0)

    content_refresh_s: float = Field(1.0, ge=0)
    delta_retention_s: float = Field(3600.0, ge=0)
    flush_interval_s: float = Field(0.4, gt=0, le=10)
    flush_max_chars: int = Field(8192, ge=1)
    delta_sweep_interval_s: float = Field(60.0, gt=0, le=60)

    receive_wait_s: int = Field(20, ge=0, le=20)
    visibility_timeout_s: int = Field(60, ge=5, le=43_200)
    lease_s: float = Field(10.0, ge=3)
    takeover_interval_s: float = Field(2.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    orphaned_after_s: float = Field(300.0, gt=0)
    orphan_sweep_interval_s: float = Field(60.0, gt=0)
    provider_retries: int = Field(3, ge=0)
    first_token_timeout_s: float = Field(60.0, gt=0)
    stall_timeout_s: float = Field(60.0, gt=0)
    job_timeout_s: float = Field(900.0, gt=0)

    queue_depth_interval_s: float = Field(15.0, gt=0)
    health_stall_s: float = Field(60.0, gt=0)
    startup_timeout_s: float = Field(120.0, gt=0)

    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("media_url_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(host.strip() for host in value.split(",") if host.strip())
        return value
