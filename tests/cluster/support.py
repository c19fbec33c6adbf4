"""What the cluster's tests share: the command, and ports a cluster may take."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from photogram.cluster.processes import port_free

PHOTOGRAM = str(Path(sys.executable).with_name("photogram"))


def free_base_port(span: int) -> int:
    """A base port whose next ``span`` ports are all free. Below the kernel's range for
    outgoing connections (32768 on), so no client socket takes one meanwhile."""
    for _ in range(200):
        base = random.randrange(20000, 32768 - span)
        if all(port_free(port) for port in range(base, base + span)):
            return base
    raise RuntimeError("no free span of ports")


#: App servers in the test clusters, and the ports such a cluster takes from its base port
#: (src/photogram/cluster/layout.py).
APP_SERVERS = 2
SPAN = 10 + APP_SERVERS


def up_arguments(directory: Path, base_port: int) -> list[str]:
    """``photogram cluster up`` for a small test cluster in ``directory``."""
    return [
        "cluster",
        "up",
        "--dir",
        str(directory),
        "--base-port",
        str(base_port),
        "--app-servers",
        str(APP_SERVERS),
        "--web-workers",
        "1",
        "--shards",
        "8",
        "--timeout",
        "300",
    ]
