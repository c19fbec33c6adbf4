"""``up``, ``down`` and ``status`` of a local cluster (layout.py says where everything is).

``up`` starts what is not running, in dependency order, and waits for each part to answer
in its own protocol before starting what needs it: PostgreSQL, then its databases,
PgBouncer, memcached, Redis and the RabbitMQ vhost; then ``photogram init``; then the app
servers, the worker and nginx. If anything fails, what this ``up`` started is stopped
again, so a failed ``up`` leaves the machine as it found it. ``down`` stops everything in
the reverse order and checks that no process of the cluster is left.

PostgreSQL refuses to run as root, and so does PgBouncer; run by root, the cluster runs
them, memcached and nginx's workers as the ``postgres`` user (which the PostgreSQL
packages create), so that user must be able to reach the cluster's directory.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg  # type: ignore[import-untyped]

from photogram.cluster import files, probes, processes
from photogram.cluster.layout import (
    GLOBAL_DATABASE,
    HOST,
    SHARD_DATABASE,
    ClusterError,
    Layout,
    Part,
    vhost_for,
)
from photogram.cluster.processes import Proc
from photogram.db.migrations import init_cluster
from photogram.errors import PhotogramError
from photogram.settings import load_settings

#: The user PostgreSQL and the rest run as when the cluster is started by root.
SERVICE_USER = "postgres"
#: Celery worker threads.
WORKER_CONCURRENCY = 4
#: How long a graceful stop may take before the process is killed.
STOP_SECONDS = {"app": 40.0, "worker": 40.0, "nginx": 15.0, "postgresql": 60.0}

Say = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# --- what the machine has ---------------------------------------------------------------------


@dataclass(frozen=True)
class Binaries:
    postgresql: Path  # PostgreSQL's bin directory (initdb, pg_ctl)
    pgbouncer: str
    memcached: str
    redis_server: str
    nginx: str
    rabbitmqctl: str

    @classmethod
    def find(cls) -> Binaries:
        """The Debian packages' programs; ClusterError naming every one missing."""
        found: dict[str, str | None] = {
            "pgbouncer": _which("pgbouncer", "/usr/sbin/pgbouncer"),
            "memcached": _which("memcached", "/usr/bin/memcached"),
            "redis_server": _which("redis-server", "/usr/bin/redis-server"),
            "nginx": _which("nginx", "/usr/sbin/nginx"),
            "rabbitmqctl": _which("rabbitmqctl", "/usr/sbin/rabbitmqctl"),
        }
        postgresql = _postgresql_bin()
        missing = [name.replace("_", "-") for name, path in found.items() if path is None] + (
            [] if postgresql else ["postgresql"]
        )
        if missing:
            packages = " ".join(
                "rabbitmq-server" if name == "rabbitmqctl" else name for name in missing
            )
            raise ClusterError(
                f"not installed: {', '.join(missing)} (on Debian: apt-get install -y {packages})"
            )
        assert postgresql is not None
        return cls(postgresql, **{name: str(path) for name, path in found.items()})


def _which(name: str, fallback: str) -> str | None:
    return shutil.which(name) or (fallback if os.access(fallback, os.X_OK) else None)


def _postgresql_bin() -> Path | None:
    """The newest PostgreSQL's bin directory (Debian keeps each major version apart)."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(n) for n in re.findall(r"\d+", path.parent.parent.name)) or (0,)

    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=version)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def service_user() -> str | None:
    """Who runs PostgreSQL and the rest: ``postgres`` under root, else nobody else."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        raise ClusterError(
            f"PostgreSQL refuses to run as root, and there is no {SERVICE_USER!r} user to "
            "run it as: install PostgreSQL's packages, or run as another user"
        ) from None
    return SERVICE_USER


def _chown(path: Path, user: str | None) -> None:
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def photogram_command() -> list[str]:
    """The ``photogram`` command of this installation."""
    beside = Path(sys.executable).with_name("photogram")
    if beside.is_file():
        return [str(beside)]
    return [sys.executable, "-c", "from photogram.cli import main; main()"]


def photogram_env(layout: Layout, part: Part) -> dict[str, str]:
    """The environment of the cluster's photogram processes: the settings file, and
    nothing else of photogram's (a PHOTOGRAM_* variable would win over the file) but each
    process's own ``server_name``, which canary gates tell servers apart by."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("PHOTOGRAM_") and key not in ("GUNICORN_CMD_ARGS", "WEB_CONCURRENCY")
    }
    env["PHOTOGRAM_CONFIG"] = str(layout.settings_file)
    env["PHOTOGRAM_SERVER_NAME"] = f"{socket.gethostname()}-{part.name}"
    return env


# --- state ------------------------------------------------------------------------------------


@dataclass
class PartState:
    part: Part
    proc: Proc | None
    answers: bool

    @property
    def running(self) -> bool:
        return self.answers if not self.part.has_process else self.proc is not None

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.part.name,
            "kind": self.part.kind,
            "role": self.part.role,
            "pid": self.proc.pid if self.proc else None,
            "host": HOST,
            "port": self.part.port,
            "running": self.running,
            "answers": self.answers,
        }


def _postmaster(layout: Layout, part: Part) -> Proc | None:
    """PostgreSQL's postmaster as its own pid file (``postmaster.pid``) names it."""
    try:
        pid = int((layout.pg_data(part.index) / "postmaster.pid").read_text().split()[0])
    except (FileNotFoundError, PermissionError, ValueError, IndexError):
        return None
    return processes.identify(pid)


def current(layout: Layout, part: Part) -> Proc | None:
    """The process of ``part`` that runs now, if any."""
    if not part.has_process:
        return None
    proc = processes.read_pidfile(layout.pidfile(part))
    if proc is None and part.kind == "postgresql":
        proc = _postmaster(layout, part)
    return proc


def states(layout: Layout) -> list[PartState]:
    parts = layout.parts()
    answered = asyncio.run(probes.answering(layout, parts))
    return [PartState(part, current(layout, part), answered[part.name]) for part in parts]


def load(directory: Path) -> Layout:
    layout = Layout.load(directory)
    if layout is None:
        raise ClusterError(f"no cluster in {directory} (`photogram cluster up` makes one)")
    return layout


# --- up ---------------------------------------------------------------------------------------


@dataclass
class Up:
    """One ``up``: starts parts, remembering what it started to stop it again on failure."""

    layout: Layout
    binaries: Binaries
    say: Say = _quiet
    timeout: float = 120.0
    started: list[Part] = field(default_factory=list)
    procs: dict[str, Proc] = field(default_factory=dict)
    popens: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    vhost_added: bool = False

    @property
    def user(self) -> str | None:
        return self.layout.run_as

    # --- the steps ----------------------------------------------------------------------------

    def run(self, given: dict[str, Any]) -> None:
        layout = self.layout
        parts = layout.parts()
        running = {part.name: proc for part in parts if (proc := current(layout, part))}
        self._check_ports([p for p in parts if p.has_process and p.name not in running])
        self.procs.update(running)
        self._prepare_directories()
        values = files.write_settings(layout, given)
        files.write_configs(layout, values, self.user)
        layout.save()

        infra = [p for p in parts if p.kind in ("postgresql", "pgbouncer", "memcached", "redis")]
        with ThreadPoolExecutor(1) as pool:
            vhost = pool.submit(self._add_vhost)
            self._start_postgresql([p for p in infra if p.kind == "postgresql"], running)
            for part in infra:
                if part.kind != "postgresql" and part.name not in running:
                    self._spawn(part, self._command(part))
            self._wait([p for p in infra if p.kind == "postgresql"])
            self.say("creating the databases")
            asyncio.run(self._create_databases())
            self._wait([p for p in infra if p.kind != "postgresql"])
            vhost.result()
        self._wait([layout.part("rabbitmq")])

        self.say(f"photogram init: {layout.shards} logical shards over db1 and db2")
        self._init(values)

        # nginx last: a server it finds not listening yet is left alone for fail_timeout.
        for kinds in (("app", "worker"), ("nginx",)):
            for part in parts:
                if part.kind in kinds and part.name not in running:
                    self._spawn(part, self._command(part))
            self._wait([p for p in parts if p.kind in kinds])

    def undo(self) -> None:
        """Stop what this ``up`` started (after a failure)."""
        for part in reversed(self.started):
            _stop_part(self.layout, self.binaries, part, self.procs.get(part.name))
        if self.vhost_added:
            _delete_vhost(self.layout, self.binaries)

    # --- helpers ------------------------------------------------------------------------------

    def _check_ports(self, parts: list[Part]) -> None:
        taken = [part for part in parts if not processes.port_free(part.port)]
        if taken:
            names = ", ".join(f"{part.port} ({part.name})" for part in taken)
            raise ClusterError(
                f"port {names} already in use: choose other ports with --base-port"
                if len(taken) == 1
                else f"ports {names} already in use: choose other ports with --base-port"
            )

    def _prepare_directories(self) -> None:
        layout = self.layout
        for directory in (layout.dir, layout.etc, layout.run, layout.logs, layout.data_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for directory in (layout.redis_dir, layout.nginx_dir):
            directory.mkdir(exist_ok=True)
        layout.dir.chmod(0o755)
        layout.postgresql_dir.mkdir(exist_ok=True)
        _chown(layout.postgresql_dir, self.user)
        if self.user is not None:
            reach = subprocess.run(  # noqa: S603
                ["/usr/bin/test", "-w", str(layout.postgresql_dir)], user=self.user, check=False
            )
            if reach.returncode != 0:
                raise ClusterError(
                    f"the {self.user} user, which runs PostgreSQL here, cannot reach "
                    f"{layout.dir}: choose a --dir every user can reach (under /srv or /tmp)"
                )

    def _spawn(self, part: Part, command: list[str]) -> None:
        popen = processes.spawn(
            command,
            log=self.layout.log(part),
            env=photogram_env(self.layout, part) if part.kind in ("app", "worker") else os.environ,
            cwd=self.layout.dir,
        )
        proc = processes.identify(popen.pid)
        if proc is None:
            popen.wait()
            raise ClusterError(
                f"{part.name} stopped at once: see {self.layout.log(part)}"
                + _last_line(self.layout.log(part))
            )
        self.started.append(part)
        self.popens[part.name] = popen
        self.procs[part.name] = proc
        processes.write_pidfile(self.layout.pidfile(part), proc)

    def _command(self, part: Part) -> list[str]:
        layout, bins = self.layout, self.binaries
        match part.kind:
            case "pgbouncer":
                # PgBouncer drops to the user itself (-u): it refuses to run as root.
                user = ["-u", self.user] if self.user else []
                return [bins.pgbouncer, *user, str(layout.etc / f"pgbouncer-{part.index}.ini")]
            case "memcached":
                user = ["-u", self.user] if self.user else []  # it refuses root without
                return [
                    bins.memcached,
                    "-l",
                    HOST,
                    "-p",
                    str(part.port),
                    "-U",
                    "0",
                    "-m",
                    "64",
                    *user,
                ]
            case "redis":
                return [bins.redis_server, str(layout.etc / "redis.conf")]
            case "app":
                return [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "--config",
                    "python:photogram.cluster.gunicorn_config",
                    "--bind",
                    f"{HOST}:{part.port}",
                    "--workers",
                    str(layout.web_workers),
                    "--name",
                    f"photogram-{part.name}",
                    "--control-socket",
                    str(layout.run / f"{part.name}.ctl"),
                ]
            case "worker":
                return [
                    *photogram_command(),
                    "worker",
                    "--concurrency",
                    str(WORKER_CONCURRENCY),
                    "--metrics-port",
                    str(part.port),
                ]
            case "nginx":
                return [
                    bins.nginx,
                    "-p",
                    f"{layout.nginx_dir}/",
                    "-c",
                    str(layout.etc / "nginx.conf"),
                    "-e",
                    str(layout.logs / "nginx-error.log"),
                    "-g",
                    "daemon off;",
                ]
        raise AssertionError(part.kind)

    def _start_postgresql(self, parts: list[Part], running: dict[str, Proc]) -> None:
        layout, bins = self.layout, self.binaries
        fresh = [p for p in parts if not (layout.pg_data(p.index) / "PG_VERSION").exists()]
        if fresh:
            self.say("initdb: " + ", ".join(str(layout.pg_data(p.index)) for p in fresh))
        initdbs = [
            (
                part,
                subprocess.Popen(  # noqa: S603
                    [
                        str(bins.postgresql / "initdb"),
                        "--pgdata",
                        str(layout.pg_data(part.index)),
                        "--username",
                        "postgres",
                        "--auth",
                        "trust",
                        "--encoding",
                        "UTF8",
                        "--no-locale",
                        "--no-instructions",
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    cwd=layout.postgresql_dir,
                    user=self.user,
                ),
            )
            for part in fresh
        ]
        for part, initdb in initdbs:
            _, problems = initdb.communicate()
            if initdb.returncode != 0:
                why = problems.decode(errors="replace").strip().splitlines()
                raise ClusterError(
                    f"initdb for {part.name} failed: {why[-1] if why else initdb.returncode}"
                )
            conf = layout.pg_data(part.index) / "postgresql.conf"
            with conf.open("a") as handle:
                handle.write(f"\ninclude_if_exists = '{files.POSTGRESQL_INCLUDE}'\n")
        for part in parts:
            include = layout.pg_data(part.index) / files.POSTGRESQL_INCLUDE
            include.write_text(files.postgresql_conf(part.port), encoding="utf-8")
            if part.name in running:
                continue
            log = layout.log(part)
            log.touch()
            _chown(log, self.user)
            pg_ctl = [str(bins.postgresql / "pg_ctl"), "--pgdata", str(layout.pg_data(part.index))]
            starting = processes.spawn(
                [*pg_ctl, "--log", str(log), "--no-wait", "start"],
                log=log,
                env=os.environ,
                cwd=layout.postgresql_dir,
                user=self.user,
            )
            if starting.wait() != 0:
                raise ClusterError(f"pg_ctl could not start {part.name}: see {log}")
            self.started.append(part)
            proc = self._await_postmaster(part)
            self.procs[part.name] = proc
            processes.write_pidfile(layout.pidfile(part), proc)

    def _await_postmaster(self, part: Part) -> Proc:
        deadline = time.monotonic() + self.timeout
        while (proc := _postmaster(self.layout, part)) is None:
            if time.monotonic() > deadline:
                raise ClusterError(f"{part.name} did not start: see {self.layout.log(part)}")
            time.sleep(0.05)
        return proc

    async def _create_databases(self) -> None:
        p = self.layout.base_port
        wanted = {p + 1: [GLOBAL_DATABASE, SHARD_DATABASE], p + 2: [SHARD_DATABASE]}
        for port, names in wanted.items():
            conn = await asyncpg.connect(host=HOST, port=port, user="postgres", database="postgres")
            try:
                for name in names:
                    if not await conn.fetchval(
                        "SELECT 1 FROM pg_database WHERE datname = $1", name
                    ):
                        await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

    def _add_vhost(self) -> None:
        layout = self.layout
        user = unquote(urlsplit(layout.broker).username or "guest")
        self.say(f"RabbitMQ vhost {layout.vhost}")
        _rabbitmqctl(self.binaries, "add_vhost", layout.vhost)
        self.vhost_added = True
        _rabbitmqctl(self.binaries, "set_permissions", "-p", layout.vhost, user, ".*", ".*", ".*")

    def _init(self, values: dict[str, Any]) -> None:
        """What ``photogram init`` does, with the settings file's values: the global
        database, the shard map, and every shard schema on both servers."""
        try:
            settings = load_settings(**values)
            report = asyncio.run(init_cluster(settings, self.layout.shards))
        except PhotogramError as exc:
            raise ClusterError(f"photogram init failed: {exc}") from None
        counts = ", ".join(
            f"{name}: {c['created']} created, {c['upgraded']} upgraded, {c['current']} current"
            for name, c in report.schemas.items()
        )
        (self.layout.logs / "init.log").write_text(
            f"{report.logical_shards} logical shards, map v{report.map_version}; {counts}\n"
        )

    def _wait(self, parts: list[Part]) -> None:
        """Wait until every one of ``parts`` answers; ClusterError when one of them stops,
        or does not answer within ``timeout``."""
        layout = self.layout
        if parts:
            self.say("waiting for " + ", ".join(part.name for part in parts))

        async def waiting() -> None:
            pending = list(parts)
            deadline = time.monotonic() + self.timeout
            while True:
                for part in pending:
                    proc = self.procs.get(part.name)
                    if part.has_process and (proc is None or not processes.alive(proc)):
                        popen = self.popens.get(part.name)
                        if popen is not None:
                            popen.poll()  # reaps it
                        raise ClusterError(
                            f"{part.name} stopped while starting: see {layout.log(part)}"
                            + _last_line(layout.log(part))
                        )
                answered = await probes.answering(layout, pending)
                pending = [part for part in pending if not answered[part.name]]
                if not pending:
                    return
                if time.monotonic() > deadline:
                    names = ", ".join(part.name for part in pending)
                    logs = layout.log(pending[0]) if pending[0].has_process else layout.logs
                    raise ClusterError(
                        f"{names} did not answer within {self.timeout:g} s: see {logs}"
                    )
                await asyncio.sleep(0.2)

        asyncio.run(waiting())


def _last_line(log: Path) -> str:
    lines = [line for line in processes.tail(log, 5).splitlines() if line.strip()]
    return f" ({lines[-1].strip()[:200]})" if lines else ""


def _rabbitmqctl(binaries: Binaries, *args: str) -> subprocess.CompletedProcess[str]:
    ran = subprocess.run(  # noqa: S603
        [binaries.rabbitmqctl, "-q", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if ran.returncode != 0 and "does not exist" not in ran.stdout + ran.stderr:
        why = (ran.stderr or ran.stdout).strip().splitlines()
        raise ClusterError(
            f"rabbitmqctl {args[0]} failed: {why[-1] if why else ran.returncode}"
            " (is RabbitMQ running, and may this user run rabbitmqctl?)"
        )
    return ran


def _delete_vhost(layout: Layout, binaries: Binaries) -> None:
    _rabbitmqctl(binaries, "delete_vhost", layout.vhost)


def up(
    directory: Path,
    *,
    base_port: int | None,
    app_servers: int | None,
    web_workers: int | None,
    shards: int | None,
    broker: str | None,
    given: dict[str, Any],
    defaults: dict[str, Any],
    timeout: float,
    say: Say = _quiet,
) -> tuple[Layout, bool]:
    """Bring the cluster in ``directory`` up; (its layout, whether it was already up).

    Options left None keep what the cluster's record says (else ``defaults``). While any
    part runs, an option that differs from the record is refused: ``down`` first."""
    if re.search(r"[\s\"'\\;{}$#]", str(directory)):
        raise ClusterError(
            f"choose a --dir without spaces, quotes or ;{{}}$#: {str(directory)!r} cannot "
            "be written into nginx's and Redis's configuration as it is"
        )
    binaries = Binaries.find()
    recorded = Layout.load(directory)
    asked = {
        "base_port": base_port,
        "app_servers": app_servers,
        "web_workers": web_workers,
        "shards": shards,
        "broker": broker,
    }
    base = recorded.to_json() if recorded else defaults
    chosen: dict[str, Any] = {
        name: base[name] if value is None else value for name, value in asked.items()
    }
    layout = Layout(
        dir=directory,
        vhost=recorded.vhost if recorded else vhost_for(directory),
        run_as=service_user(),
        **chosen,
    )
    if recorded is not None:
        running = [part for part in recorded.parts() if current(recorded, part)]
        if running:
            differ = [n for n, v in asked.items() if v is not None and v != base[n]]
            if differ:
                option = differ[0].replace("_", "-")
                raise ClusterError(
                    f"the cluster in {directory} runs with --{option} {base[differ[0]]}: "
                    "`photogram cluster down` first to change it"
                )
            layout = recorded
            if all(state.answers for state in states(layout)):
                return layout, True
    if layout.last_port > 65535:
        raise ClusterError(f"--base-port {layout.base_port} leaves no room for every part")
    starting = Up(layout, binaries, say, timeout)
    try:
        starting.run(given)
    except BaseException:
        if starting.started or starting.vhost_added:
            say("stopping what was started")
            starting.undo()
        raise
    return layout, False


# --- down -------------------------------------------------------------------------------------

#: Stopped one group after another; the parts of a group at once.
STOP_ORDER = (("nginx",), ("app", "worker"), ("pgbouncer", "memcached", "redis"), ("postgresql",))


def _stop_part(layout: Layout, binaries: Binaries, part: Part, proc: Proc | None) -> None:
    if proc is None:
        proc = current(layout, part)
    if proc is not None:
        timeout = STOP_SECONDS.get(part.kind, 10.0)
        if part.kind == "postgresql":
            family = [proc, *processes.children_of([proc])]
            # A fast shutdown: sessions are ended, everything written is kept.
            subprocess.run(  # noqa: S603
                [
                    str(binaries.postgresql / "pg_ctl"),
                    "--pgdata",
                    str(layout.pg_data(part.index)),
                    "--mode",
                    "fast",
                    "--timeout",
                    str(int(timeout)),
                    "stop",
                ],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                cwd=layout.postgresql_dir,
                user=layout.run_as,
                check=False,
            )
            processes.stop(proc, signal.SIGQUIT, 5.0)  # only if pg_ctl could not
            processes.wait_gone(family, 5.0)
        else:
            processes.stop(
                proc, signal.SIGQUIT if part.kind == "nginx" else signal.SIGTERM, timeout
            )
    layout.pidfile(part).unlink(missing_ok=True)


def down(directory: Path, *, purge: bool, say: Say = _quiet) -> list[str]:
    """Stop every part of the cluster in ``directory``; the names of those that ran. With
    ``purge``, remove the directory too. ClusterError if a process outlives it all."""
    layout = load(directory)
    binaries = Binaries.find()
    parts = layout.parts()
    procs = {part.name: current(layout, part) for part in parts}
    family = [proc for proc in procs.values() if proc is not None]
    family += processes.children_of(family)
    stopped = [name for name, proc in procs.items() if proc is not None]

    def delete_vhost() -> None:
        # Only a vhost that answers is there to delete (a previous `down` deleted it).
        if asyncio.run(probes.answers(layout, layout.part("rabbitmq"))):
            say(f"deleting RabbitMQ vhost {layout.vhost}")
            _delete_vhost(layout, binaries)

    with ThreadPoolExecutor(1) as aside:
        deleted = None
        for kinds in STOP_ORDER:
            group = [part for part in parts if part.kind in kinds]
            if any(procs[part.name] for part in group):
                say("stopping " + ", ".join(part.name for part in group if procs[part.name]))
            with ThreadPoolExecutor(max(1, len(group))) as pool:
                for done in [
                    pool.submit(_stop_part, layout, binaries, part, procs[part.name])
                    for part in group
                ]:
                    done.result()
            if "worker" in kinds:  # nothing uses the vhost any more
                deleted = aside.submit(delete_vhost)
        assert deleted is not None
        deleted.result()
    left = [proc for proc in family if processes.alive(proc)]
    if left:
        raise ClusterError(
            "still running after stopping: pids " + ", ".join(str(p.pid) for p in left)
        )
    if purge:
        shutil.rmtree(layout.dir)
    return stopped
