"""One settings object, one env prefix; embedded defaults; no credentials among the fields."""

from __future__ import annotations

import pytest

from service.settings import Settings


def test_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(__import__("os").environ):
        if name.startswith("QUANTSERVE_"):
            monkeypatch.delenv(name)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.database_url.startswith("sqlite:///")
    assert s.broker_url.startswith("sqla+sqlite:///") and not s.broker_is_redis
    assert (s.storage, s.auth_enabled, s.cors_origins) == ("local", False, [])
    assert s.max_upload_bytes == 4 << 30


def test_environment_with_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTSERVE_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("QUANTSERVE_STORAGE", "s3")
    monkeypatch.setenv("QUANTSERVE_MAX_UPLOAD_BYTES", "1024")
    monkeypatch.setenv("QUANTSERVE_AUTH_ENABLED", "true")
    monkeypatch.setenv("QUANTSERVE_CORS_ORIGINS", "https://portal.example, https://b.example")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.broker_is_redis and s.storage == "s3" and s.max_upload_bytes == 1024
    assert s.auth_enabled
    assert s.cors_origins == ["https://portal.example", "https://b.example"]
    monkeypatch.setenv("QUANTSERVE_CORS_ORIGINS", '["https://c.example"]')
    assert Settings(_env_file=None).cors_origins == ["https://c.example"]  # type: ignore[call-arg]


def test_bad_values_are_refused_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUANTSERVE_STORAGE", "ftp")
    with pytest.raises(ValueError, match="storage"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_every_field_is_documented_and_none_holds_a_secret() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        assert not any(word in name for word in ("secret", "password", "access_key")), name


@pytest.mark.parametrize(("soft", "hard"), [("3600", "3600"), ("30", "0.5")])
def test_soft_time_limit_must_be_below_the_hard_one(
    monkeypatch: pytest.MonkeyPatch, soft: str, hard: str
) -> None:
    monkeypatch.setenv("QUANTSERVE_JOB_SOFT_TIME_LIMIT_S", soft)
    monkeypatch.setenv("QUANTSERVE_JOB_TIME_LIMIT_S", hard)
    with pytest.raises(ValueError, match=(
        rf"job_soft_time_limit_s={float(soft):g} must be below job_time_limit_s={float(hard):g}"
    )):
        Settings(_env_file=None)  # type: ignore[call-arg]
    monkeypatch.setenv("QUANTSERVE_JOB_SOFT_TIME_LIMIT_S", "0.4")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.job_soft_time_limit_s < s.job_time_limit_s
