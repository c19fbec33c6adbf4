"""Where a local cluster keeps everything, which ports its parts listen on, and its record.

From the base port P:

| port | part |
|---|---|
| P | nginx, the cluster's address |
| P+1, P+2 | PostgreSQL servers 1 and 2 |
| P+3, P+4 | PgBouncer in front of each |
| P+5, P+6 | memcached servers |
| P+7 | Redis |
| P+8 | the Celery worker's metrics |
| P+10 … | app servers (Gunicorn), one port each |

The directory holds ``photogram.toml`` (the settings every photogram process of the
cluster reads), ``cluster.json`` (this layout, so ``status`` and ``down`` need no
options), ``etc/`` (configuration files), ``run/`` (pid files), ``logs/``,
``postgresql/1`` and ``postgresql/2`` (data directories), ``data/`` (photogram's data
directory: media), ``redis/`` and ``nginx/`` (nginx's temporary files).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from photogram.errors import PhotogramError

#: Bumped when the record's shape changes.
RECORD_VERSION = 1
DEFAULT_BASE_PORT = 8400
MAX_APP_SERVERS = 50
HOST = "127.0.0.1"
#: Physical database names in the shard map, one per PostgreSQL server.
DATABASES = ("db1", "db2")
#: The database each PostgreSQL server holds for its shards, and the global one (server 1).
SHARD_DATABASE = "photogram"
GLOBAL_DATABASE = "photogram_global"

Kind = Literal[
    "postgresql", "pgbouncer", "memcached", "redis", "rabbitmq", "app", "worker", "nginx"
]


class ClusterError(PhotogramError):
    """Something ``photogram cluster`` cannot do, with a message fit to print as it is."""


@dataclass(frozen=True)
class Part:
    """One part of the cluster: a process of its own, or (RabbitMQ) a virtual host."""

    name: str
    kind: Kind
    port: int
    role: str
    #: PostgreSQL and PgBouncer: which server (1 or 2); app servers: which one.
    index: int = 0

    @property
    def has_process(self) -> bool:
        return self.kind != "rabbitmq"


@dataclass(frozen=True)
class Layout:
    dir: Path
    base_port: int
    app_servers: int
    web_workers: int
    shards: int
    #: RabbitMQ, without a virtual host: ``amqp://user:password@host:port``.
    broker: str
    vhost: str
    #: Who runs PostgreSQL, PgBouncer, memcached and nginx's workers when started by root.
    run_as: str | None

    # --- paths ------------------------------------------------------------------------------

    @property
    def settings_file(self) -> Path:
        return self.dir / "photogram.toml"

    @property
    def record(self) -> Path:
        return self.dir / "cluster.json"

    @property
    def etc(self) -> Path:
        return self.dir / "etc"

    @property
    def run(self) -> Path:
        return self.dir / "run"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def redis_dir(self) -> Path:
        return self.dir / "redis"

    @property
    def nginx_dir(self) -> Path:
        return self.dir / "nginx"

    @property
    def postgresql_dir(self) -> Path:
        return self.dir / "postgresql"

    def pg_data(self, index: int) -> Path:
        return self.postgresql_dir / str(index)

    def pidfile(self, part: Part) -> Path:
        return self.run / f"{part.name}.pid"

    def log(self, part: Part) -> Path:
        return self.logs / f"{part.name}.log"

    # --- ports and addresses ----------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.base_port}"

    @property
    def broker_url(self) -> str:
        return f"{self.broker}/{self.vhost}"

    @property
    def last_port(self) -> int:
        return self.base_port + 9 + self.app_servers

    def parts(self) -> list[Part]:
        """Every part, in the order ``up`` starts them (``down`` stops them in reverse)."""
        p = self.base_port
        broker_port = int(self.broker.rpartition(":")[2] or 5672)
        parts = [
            Part("postgresql-1", "postgresql", p + 1, "PostgreSQL: global database, db1", 1),
            Part("postgresql-2", "postgresql", p + 2, "PostgreSQL: db2", 2),
            Part("pgbouncer-1", "pgbouncer", p + 3, "PgBouncer (transaction) -> postgresql-1", 1),
            Part("pgbouncer-2", "pgbouncer", p + 4, "PgBouncer (transaction) -> postgresql-2", 2),
            Part("memcached-1", "memcached", p + 5, "memcached", 1),
            Part("memcached-2", "memcached", p + 6, "memcached", 2),
            Part("redis", "redis", p + 7, "Redis: home feeds"),
            Part("rabbitmq", "rabbitmq", broker_port, f"RabbitMQ vhost {self.vhost}"),
        ]
        parts += [
            Part(f"app-{i}", "app", p + 9 + i, f"Gunicorn, {self.web_workers} Uvicorn workers", i)
            for i in range(1, self.app_servers + 1)
        ]
        parts += [
            Part("worker", "worker", p + 8, "Celery worker (metrics on this port)"),
            Part("nginx", "nginx", p, "nginx -> app servers"),
        ]
        return parts

    def part(self, name: str) -> Part:
        return next(part for part in self.parts() if part.name == name)

    # --- the record -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {"version": RECORD_VERSION, **asdict(self), "dir": str(self.dir)}

    def save(self) -> None:
        self.record.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> Layout | None:
        """The layout recorded in ``directory``; None when there is no cluster there."""
        record = directory / "cluster.json"
        try:
            data = json.loads(record.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise ClusterError(f"{record} is not a cluster record: {exc}") from None
        if data.get("version") != RECORD_VERSION:
            raise ClusterError(f"{record} was written by another version of photogram")
        data.pop("version")
        data["dir"] = directory
        try:
            return cls(**data)
        except TypeError as exc:
            raise ClusterError(f"{record} is not a cluster record: {exc}") from None


def vhost_for(directory: Path) -> str:
    """The RabbitMQ virtual host of the cluster in ``directory``: one per directory, so
    clusters side by side never share queues."""
    digest = hashlib.sha256(str(directory).encode()).hexdigest()[:10]
    return f"photogram-cluster-{digest}"
