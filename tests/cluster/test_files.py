"""What `photogram cluster up` writes, and the deployment files beside it: settings that
load as written, configuration nginx and Gunicorn accept, a record that reads back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from photogram.cluster import files
from photogram.cluster.layout import Layout, vhost_for
from photogram.settings import Settings, load_settings

ROOT = Path(__file__).parents[2]
DEPLOY = ROOT / "deploy"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def layout(directory: Path, **changes: Any) -> Layout:
    fields: dict[str, Any] = {
        "dir": directory,
        "base_port": 30000,
        "app_servers": 3,
        "web_workers": 2,
        "shards": 16,
        "broker": "amqp://guest:guest@127.0.0.1:5672",
        "vhost": vhost_for(directory),
        "run_as": None,
    }
    return Layout(**(fields | changes))


# --- TOML -------------------------------------------------------------------------------------

keys = st.text(min_size=1, max_size=12)
scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(keys, values, max_size=6))
def test_toml_documents_read_back_as_written(document: dict[str, Any]) -> None:
    assert tomllib.loads(files.toml_document(document)) == document


def test_settings_given_to_up_are_kept_and_the_cluster_decides_its_addresses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in os.environ:
        if name.startswith("PHOTOGRAM_"):
            monkeypatch.delenv(name)
    given_settings = Settings(
        password_time_cost=1,
        secret_key="a secret of the operator's",
        databases={"elsewhere": "postgresql://x@10.9.9.9/photogram"},
        media_stores={
            "local": {"kind": "filesystem", "path": str(tmp_path / "m")},
            "s3": {
                "kind": "s3",
                "bucket": "photos",
                "access_key_id": "ak",
                "secret_access_key": "sk\x7f\"'",
            },
        },
        instance_title='Ünïcode \\ "quoted"',
    )
    carried = files.carried(given_settings)
    assert "databases" not in carried
    assert carried["media_stores"]["s3"]["secret_access_key"] == "sk\x7f\"'"

    cluster = layout(tmp_path)
    cluster.dir.mkdir(exist_ok=True)
    files.write_settings(cluster, carried)
    assert cluster.settings_file.stat().st_mode & 0o777 == 0o600
    loaded = load_settings(cluster.settings_file)
    assert loaded.password_time_cost == 1
    assert loaded.instance_title == 'Ünïcode \\ "quoted"'
    assert loaded.secret_key.get_secret_value() == "a secret of the operator's"
    assert loaded.environment == "production"
    assert loaded.pgbouncer is True
    assert loaded.logical_shards == 16
    assert loaded.public_url == "http://127.0.0.1:30000"
    assert loaded.databases == {
        "db1": "postgresql+asyncpg://postgres@127.0.0.1:30003/photogram",
        "db2": "postgresql+asyncpg://postgres@127.0.0.1:30004/photogram",
    }
    assert loaded.global_database == (
        "postgresql+asyncpg://postgres@127.0.0.1:30003/photogram_global"
    )
    assert loaded.cache_servers == ["127.0.0.1:30005", "127.0.0.1:30006"]
    assert loaded.redis_url == "redis://127.0.0.1:30007/0"
    assert loaded.broker_url == f"amqp://guest:guest@127.0.0.1:5672/{cluster.vhost}"
    assert loaded.data_dir == tmp_path / "data"


def test_a_cluster_keeps_its_generated_secret(tmp_path: Path) -> None:
    cluster = layout(tmp_path)
    first = files.write_settings(cluster, {})["secret_key"]
    assert len(first) >= 40
    assert files.write_settings(cluster, {})["secret_key"] == first
    (tmp_path / "other").mkdir()
    assert files.write_settings(layout(tmp_path / "other"), {})["secret_key"] != first


# --- the layout -------------------------------------------------------------------------------


def test_every_part_has_a_port_of_its_own_and_the_record_reads_back(tmp_path: Path) -> None:
    cluster = layout(tmp_path)
    parts = cluster.parts()
    ports = [part.port for part in parts if part.kind != "rabbitmq"]
    assert len(set(ports)) == len(ports) == 12
    assert min(ports) == 30000
    assert max(ports) == cluster.last_port == 30012
    assert [p.name for p in parts if p.kind == "app"] == ["app-1", "app-2", "app-3"]
    assert next(p for p in parts if p.kind == "rabbitmq").port == 5672

    cluster.save()
    assert Layout.load(tmp_path) == cluster
    assert Layout.load(tmp_path / "nothing") is None
    assert vhost_for(tmp_path) == vhost_for(tmp_path) != vhost_for(tmp_path / "other")


# --- configuration the servers accept ---------------------------------------------------------


def nginx_accepts(config: Path, prefix: Path) -> None:
    checked = subprocess.run(
        [NGINX, "-t", "-q", "-p", f"{prefix}/", "-c", str(config), "-e", str(prefix / "e.log")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_nginx_accepts_the_cluster_configuration(tmp_path: Path) -> None:
    cluster = layout(tmp_path)
    for directory in (cluster.etc, cluster.logs, cluster.nginx_dir):
        directory.mkdir(parents=True)
    text = files.nginx_conf(cluster, {"media_max_bytes": 32 * 1024 * 1024}, None)
    assert "proxy_next_upstream error timeout http_502 http_504;" in text
    assert "non_idempotent" not in text.replace("`non_idempotent`", "")
    assert f"client_max_body_size {33 * 1024 * 1024};" in text
    for port in (30010, 30011, 30012):
        assert f"server 127.0.0.1:{port} max_fails=2 fail_timeout=10s;" in text
    (cluster.etc / "nginx.conf").write_text(text)
    nginx_accepts(cluster.etc / "nginx.conf", cluster.nginx_dir)


def test_nginx_accepts_the_example_for_hosts_of_their_own(tmp_path: Path) -> None:
    example = (DEPLOY / "nginx.conf").read_text()
    assert "proxy_next_upstream error timeout http_502 http_504;" in example
    # Its log goes where a test may write.
    (tmp_path / "photogram.conf").write_text(example.replace("/var/log/nginx/", f"{tmp_path}/"))
    (tmp_path / "main.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\n"
        "events {}\n"
        "http {\n"
        "    access_log off;\n"
        + "".join(
            f"    {kind}_temp_path {tmp_path}/{kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        + f"    include {tmp_path}/photogram.conf;\n"
        "}\n"
    )
    nginx_accepts(tmp_path / "main.conf", tmp_path)


def test_gunicorn_runs_uvicorn_workers_with_the_deploy_configuration(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PHOTOGRAM_")}
    env["PHOTOGRAM_DATA_DIR"] = str(tmp_path)
    config = str(DEPLOY / "gunicorn.conf.py")
    printed = subprocess.run(
        [GUNICORN, "--config", config, "--print-config"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    shown = {
        name.strip(): value.strip()
        for name, _, value in (line.partition("=") for line in printed.stdout.splitlines())
    }
    assert shown["worker_class"] == "uvicorn_worker.UvicornWorker"
    assert shown["wsgi_app"] == "photogram.cluster.asgi:create()"
    assert shown["preload_app"] == "False"
    assert int(shown["keepalive"]) > 30  # longer than nginx keeps idle connections
    # The app loads from the settings in the environment (without serving: no database).
    checked = subprocess.run(
        [GUNICORN, "--config", config, "--check-config"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_the_example_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in os.environ:
        if name.startswith("PHOTOGRAM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PHOTOGRAM_SECRET_KEY", "from /etc/photogram/environment")
    settings = load_settings(DEPLOY / "photogram.example.toml")
    assert settings.environment == "production"
    assert settings.pgbouncer is True
    assert list(settings.databases) == ["db1", "db2", "db3", "db4"]
    assert settings.media_store == "photos"
    assert settings.media_spool_store == "spool"
    assert settings.broker_url is not None
    assert settings.redis_url is not None
    assert len(settings.cache_servers) == 2
