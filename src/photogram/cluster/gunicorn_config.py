"""Gunicorn's settings for a photogram app server: Uvicorn workers running the ASGI app.

Used as ``gunicorn -c python:photogram.cluster.gunicorn_config`` by ``photogram cluster
up``, and through deploy/gunicorn.conf.py on hosts of their own. Where to listen and how
many workers to run are the command line's (``--bind``, ``--workers``), or Gunicorn's own
environment variables: ``PORT`` (it then listens on 0.0.0.0:$PORT), ``WEB_CONCURRENCY``
(workers), ``FORWARDED_ALLOW_IPS`` (the load balancers whose X-Forwarded-For is believed;
loopback by default). photogram's settings come from ``PHOTOGRAM_CONFIG`` and
``PHOTOGRAM_*``, as for every photogram command.
"""

from __future__ import annotations

# Each worker builds the app from the settings in its environment (photogram.cluster.asgi).
wsgi_app = "photogram.cluster.asgi:create()"
worker_class = "uvicorn_worker.UvicornWorker"

# Every worker loads the app after the fork, never the master before it: libvips starts
# threads of its own when it is loaded, which a forked child does not get (its first
# photo would hang). It also makes a HUP load new code (docs/operations.md).
preload_app = False

# Idle connections from nginx are kept longer than nginx keeps them (its upstream
# keepalive_timeout, 30 s), so it is always nginx that closes one: never a request sent
# on a connection the app server is closing.
keepalive = 75

# A worker that stops answering its heartbeat for this long is killed and replaced.
timeout = 60
# On TERM or HUP, requests in flight get this long to finish.
graceful_timeout = 30

# Workers are replaced after about this many requests (spread, so not all at once):
# memory held by one unusual request does not stay for the life of the server.
max_requests = 20000
max_requests_jitter = 2000

# nginx logs every request; the app servers log errors and their own lifecycle.
accesslog = None
errorlog = "-"
loglevel = "info"
proc_name = "photogram-web"
