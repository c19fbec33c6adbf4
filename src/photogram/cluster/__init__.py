"""A real multi-node deployment on one machine, and the files for one on many.

``photogram cluster up|down|status`` runs the cluster photogram is built for from the
machine's own packages, on loopback ports: two PostgreSQL servers each behind PgBouncer
in transaction mode, two memcached servers, a Redis, a RabbitMQ virtual host of its own,
app servers under Gunicorn with Uvicorn workers, a Celery worker, and nginx in front
(docs/operations.md).

- ``layout``: the cluster's directory, ports and parts, and its record (``cluster.json``);
- ``files``: the configuration files ``up`` writes (settings, PgBouncer, Redis, nginx);
- ``processes``: starting, finding and stopping processes by their pid files;
- ``probes``: whether each part answers, in its own protocol;
- ``control``: ``up``, ``down`` and ``status``; ``cli``: the commands;
- ``asgi`` and ``gunicorn_config``: what Gunicorn runs, here and on real hosts.
"""
