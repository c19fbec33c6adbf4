from __future__ import annotations

from pathlib import Path

import pytest

from photogram.errors import ConfigError
from photogram.settings import PLACEHOLDER_SECRET, load_settings, normalise_dsn, redact_dsn


def test_no_settings_at_all_is_the_embedded_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings()
    assert settings.embedded
    expected = (tmp_path / "photogram-data" / "photogram.sqlite3").resolve()
    assert settings.global_dsn == f"sqlite+aiosqlite:///{expected}"
    assert settings.shard_dsns == {"main": settings.global_dsn}
    assert settings.secret_key.get_secret_value() == PLACEHOLDER_SECRET


def test_data_dir_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOTOGRAM_DATA_DIR", str(tmp_path / "elsewhere"))
    assert str(tmp_path / "elsewhere") in load_settings().global_dsn


def test_toml_file_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "photogram.toml"
    config.write_text(
        'global_database = "postgresql://u:secret@db1/g"\n'
        "logical_shards = 4096\n"
        "port = 9000\n"
        "[databases]\n"
        'db1 = "postgresql://u@db1/p"\n'
        'db2 = "postgres://u@db2/p"\n'
    )
    monkeypatch.setenv("PHOTOGRAM_PORT", "9100")
    settings = load_settings(config)
    assert settings.port == 9100
    assert settings.logical_shards == 4096
    assert settings.shard_dsns == {
        "db1": "postgresql+asyncpg://u@db1/p",
        "db2": "postgresql+asyncpg://u@db2/p",
    }
    assert not settings.embedded

    monkeypatch.setenv("PHOTOGRAM_CONFIG", str(config))
    assert load_settings().logical_shards == 4096


def test_databases_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOTOGRAM_DATABASES", '{"a": "postgresql://h/a", "b": "postgresql://h/b"}')
    assert set(load_settings().shard_dsns) == {"a", "b"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"PHOTOGRAM_LOGICAL_SHARDS": "1000"}, "power of two"),
        ({"PHOTOGRAM_LOGICAL_SHARDS": "16384"}, "power of two"),
        ({"PHOTOGRAM_GLOBAL_DATABASE": "mysql://h/db"}, "unsupported database URL"),
        ({"PHOTOGRAM_ENVIRONMENT": "production"}, "secret_key is still the placeholder"),
        ({"PHOTOGRAM_PORT": "70000"}, "port"),
        ({"PHOTOGRAM_DATABASES": '{"bad name": "postgresql://h/a"}'}, "plain identifier"),
        ({"PHOTOGRAM_MEDIA_SPOOL_STORE": "nowhere"}, "media_spool_store 'nowhere' is not one"),
        ({"PHOTOGRAM_MEDIA_SPOOL_STORE": "local"}, "must not be the media_store"),
        ({"PHOTOGRAM_BROKER_QUEUE_PREFIX": "a b"}, "broker_queue_prefix"),
    ],
)
def test_bad_settings_are_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=message) as raised:
        load_settings()
    assert "\n" not in str(raised.value)


def test_production_with_a_real_secret_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PHOTOGRAM_ENVIRONMENT", "production")
    monkeypatch.setenv("PHOTOGRAM_SECRET_KEY", "x" * 48)
    assert load_settings().environment == "production"


def test_missing_and_broken_config_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("logical_shards = = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(broken)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("shards = 3\n")
    with pytest.raises(ConfigError, match="shards"):
        load_settings(unknown)


def test_dsn_helpers() -> None:
    assert normalise_dsn("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"
    assert normalise_dsn("postgresql://h/d") == "postgresql+asyncpg://h/d"
    assert redact_dsn("postgresql://user:pw@host/db") == "postgresql://user:***@host/db"
    assert redact_dsn("postgresql://user@host/db") == "postgresql://user@host/db"
