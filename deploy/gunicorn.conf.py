"""Gunicorn's settings for a photogram app server host: ``gunicorn -c gunicorn.conf.py``.

Install as /etc/photogram/gunicorn.conf.py (deploy/systemd/photogram-web.service runs
it). Everything but what differs per host comes from photogram itself, the same settings
``photogram cluster up`` runs its app servers with (photogram/cluster/gunicorn_config.py):
Uvicorn workers, the app built after the fork, keep-alive longer than nginx's, worker
recycling. Change below what your hosts need.
"""

import os

from photogram.cluster.gunicorn_config import *  # noqa: F403

# Where to listen when started without systemd's socket (photogram-web.socket passes its
# own, and this is then not used).
bind = ["0.0.0.0:8000"]

# One Uvicorn worker per core: each is a process with one event loop. Memory: about
# 150 MiB a worker, plus what libvips takes while it processes a photo in a request.
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1))

# Only the load balancers may say who the client is (X-Forwarded-For, X-Forwarded-Proto):
# photogram's per-IP rate limit and its links depend on it.
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "10.0.1.10,10.0.1.11")

# `gunicornc` (worker status, adding workers, reloads) talks to this socket.
control_socket = "/run/photogram-web/gunicorn.ctl"
