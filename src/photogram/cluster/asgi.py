"""The ASGI app as a process manager loads it: built from the settings in the environment.

Gunicorn calls ``create()`` in each worker (``wsgi_app`` in gunicorn_config); so can any
ASGI server that takes a factory (``uvicorn --factory photogram.cluster.asgi:create``).
"""

from __future__ import annotations

from fastapi import FastAPI

from photogram.app import create_app
from photogram.settings import load_settings


def create() -> FastAPI:
    """The app for ``PHOTOGRAM_CONFIG`` and ``PHOTOGRAM_*``; invalid settings raise
    ConfigError, which stops the worker before it takes a request."""
    return create_app(load_settings())
