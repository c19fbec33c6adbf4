"""The files ``photogram cluster up`` writes: photogram's settings, PostgreSQL's and
PgBouncer's, Redis's and nginx's configuration. Written again on every ``up``, from the
layout and the settings given, so they always say what the cluster is."""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import tomllib
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel, SecretStr

from photogram.cluster.layout import (
    DATABASES,
    GLOBAL_DATABASE,
    HOST,
    SHARD_DATABASE,
    Layout,
)
from photogram.settings import Settings

#: Settings the cluster decides; anything else given to ``up`` is carried into its file.
OWNED = frozenset(
    {
        "config_file",
        "data_dir",
        "global_database",
        "databases",
        "logical_shards",
        "host",
        "port",
        "public_url",
        "pgbouncer",
        "cache_servers",
        "broker_url",
        "redis_url",
        "redis_cluster",
    }
)

#: What nginx accepts beyond the largest upload photogram takes: the form around it.
FORM_ALLOWANCE = 1024 * 1024

#: The file PostgreSQL's own configuration includes; written into each data directory.
POSTGRESQL_INCLUDE = "photogram-cluster.conf"


# --- TOML -------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_string(text: str) -> str:
    # JSON's string escapes are TOML's; DEL is the one character TOML wants escaped too.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_value(value: object) -> str:
    """One value as TOML (tables inline)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        entries = ", ".join(f"{_toml_key(str(k))} = {toml_value(v)}" for k, v in value.items())
        return "{ " + entries + " }" if entries else "{}"
    raise TypeError(f"no TOML for {type(value).__name__}")


def toml_document(values: dict[str, Any], _prefix: str = "") -> str:
    """``values`` as a TOML document: plain values first, then a ``[table]`` per mapping."""
    plain = [
        f"{_toml_key(k)} = {toml_value(v)}" for k, v in values.items() if not isinstance(v, dict)
    ]
    blocks = ["\n".join(plain)] if plain else []
    for key, value in values.items():
        if isinstance(value, dict):
            name = f"{_prefix}{_toml_key(key)}"
            blocks.append(f"[{name}]\n{toml_document(value, name + '.')}".rstrip("\n"))
    return "\n\n".join(blocks) + "\n" if blocks else ""


def _plain(value: object) -> object:
    """A settings value as TOML can say it (secrets in the clear: the file is the secret)."""
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, BaseModel):
        return _plain(value.model_dump())
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    return value


def carried(settings: Settings) -> dict[str, Any]:
    """The settings given to ``up`` (``--config``, ``PHOTOGRAM_*``) that the cluster's own
    file keeps: all but those the cluster decides (``OWNED``)."""
    given = settings.model_fields_set - OWNED
    return {
        name: _plain(getattr(settings, name))
        for name in sorted(given)
        if getattr(settings, name) is not None
    }


# --- photogram's settings ---------------------------------------------------------------------


def _existing_secret(path: Path) -> str | None:
    try:
        secret = tomllib.loads(path.read_text(encoding="utf-8")).get("secret_key")
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        return None
    return secret if isinstance(secret, str) and secret else None


def settings_values(layout: Layout, given: dict[str, Any]) -> dict[str, Any]:
    """The cluster's settings: the given ones, then the cluster's own over them."""
    p = layout.base_port
    bouncers = [p + 3, p + 4]
    return {
        "environment": "production",
        "secret_key": _existing_secret(layout.settings_file) or secrets.token_urlsafe(32),
        **given,
        "data_dir": str(layout.data_dir),
        "host": HOST,
        "public_url": layout.url,
        "logical_shards": layout.shards,
        "global_database": f"postgresql://postgres@{HOST}:{bouncers[0]}/{GLOBAL_DATABASE}",
        "pgbouncer": True,
        "cache_servers": [f"{HOST}:{p + 5}", f"{HOST}:{p + 6}"],
        "broker_url": layout.broker_url,
        "redis_url": f"redis://{HOST}:{p + 7}/0",
        "databases": {
            name: f"postgresql://postgres@{HOST}:{port}/{SHARD_DATABASE}"
            for name, port in zip(DATABASES, bouncers, strict=True)
        },
    }


SETTINGS_HEADER = """\
# photogram's settings for the local cluster in this directory: every photogram process of
# it reads this file (PHOTOGRAM_CONFIG). Written by `photogram cluster up` on every start;
# settings given to `up` (--config, PHOTOGRAM_*) are kept, the addresses are the cluster's.
# Any photogram command reaches the cluster with it, e.g.
#   photogram --config {path} shards status
"""


def write_settings(layout: Layout, given: dict[str, Any]) -> dict[str, Any]:
    values = settings_values(layout, given)
    header = SETTINGS_HEADER.format(path=layout.settings_file)
    # Readable by its owner only, from the start: it holds the secret key.
    descriptor = os.open(layout.settings_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(header + "\n" + toml_document(values))
    return values


# --- the servers' configuration ---------------------------------------------------------------


def postgresql_conf(port: int) -> str:
    return f"""\
# Written by `photogram cluster up` (included by postgresql.conf).
port = {port}
listen_addresses = '{HOST}'
unix_socket_directories = ''
max_connections = 200
shared_buffers = 128MB
log_line_prefix = '%m [%p] %q%u@%d '
"""


def pgbouncer_ini(port: int, server_port: int) -> str:
    return f"""\
;; Written by `photogram cluster up`: transaction pooling, as docs/sharding.md says.
[databases]
* = host={HOST} port={server_port} user=postgres

[pgbouncer]
listen_addr = {HOST}
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 20
max_client_conn = 2000
; A PostgreSQL server back from a restart is used within a second, not fifteen.
server_login_retry = 1
logfile =
pidfile =
log_connections = 0
log_disconnections = 0
"""


def redis_conf(port: int, directory: Path) -> str:
    return f"""\
# Written by `photogram cluster up`. Home feeds only: nothing to persist, anything lost
# is rebuilt from the shards (docs/feeds.md).
port {port}
bind {HOST}
protected-mode yes
daemonize no
dir {directory}
save ""
appendonly no
logfile ""
maxmemory 256mb
maxmemory-policy volatile-lru
"""


def nginx_conf(layout: Layout, values: dict[str, Any], user: str | None) -> str:
    template = jinja2.Template(
        files("photogram.cluster").joinpath("nginx.conf.j2").read_text(encoding="utf-8"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    largest = max(
        int(values.get(name, Settings.model_fields[name].default))
        for name in ("media_max_bytes", "avatar_max_bytes")
    )
    text: str = template.render(
        user=user,
        pid=layout.nginx_dir / "nginx.pid",
        error_log=layout.logs / "nginx-error.log",
        access_log=layout.logs / "nginx-access.log",
        temp=layout.nginx_dir,
        listen=f"{HOST}:{layout.base_port}",
        servers=[f"{HOST}:{part.port}" for part in layout.parts() if part.kind == "app"],
        max_body_bytes=largest + FORM_ALLOWANCE,
    )
    return text


def write_configs(layout: Layout, values: dict[str, Any], user: str | None) -> None:
    """Every server's configuration file, under ``etc/`` (PostgreSQL's beside its data)."""
    p = layout.base_port
    for index in (1, 2):
        ini = pgbouncer_ini(p + 2 + index, p + index)
        (layout.etc / f"pgbouncer-{index}.ini").write_text(ini, encoding="utf-8")
    (layout.etc / "redis.conf").write_text(redis_conf(p + 7, layout.redis_dir), encoding="utf-8")
    (layout.etc / "nginx.conf").write_text(nginx_conf(layout, values, user), encoding="utf-8")
