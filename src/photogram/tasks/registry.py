"""Every module that registers background tasks, so a worker knows them all."""

from __future__ import annotations

import importlib

#: Modules with ``@task`` functions (an app server imports them through its routes).
TASK_MODULES = (
    "photogram.feeds.tasks",
    "photogram.graph.tasks",
    "photogram.media.actions",
    "photogram.media.migration.tasks",
    "photogram.notifications.tasks",
    "photogram.posts.tasks",
    "photogram.posts.actions",
)


def import_tasks() -> None:
    for name in TASK_MODULES:
        importlib.import_module(name)
