"""Where the real test servers are: the variables ``scripts/servers.sh`` writes, without sourcing it.

``server_env()`` reads ``$CLOUDPROV_SERVERS_DIR/env`` (default ``<repo>/.servers/env``) and lets the
process environment override it, so CI can point the tests elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def env_file() -> Path:
    return Path(os.environ.get("CLOUDPROV_SERVERS_DIR", REPO / ".servers")) / "env"


def server_env() -> dict[str, str]:
    values: dict[str, str] = {}
    path = env_file()
    if path.exists():
        for line in path.read_text().splitlines():
            name, sep, value = line.partition("=")
            if sep and name.startswith("CLOUDPROV_"):
                values[name] = value
    values.update({k: v for k, v in os.environ.items() if k.startswith("CLOUDPROV_")})
    return values


def servers_script() -> Path:
    return Path(server_env().get("CLOUDPROV_SERVERS_SCRIPT", REPO / "scripts" / "servers.sh"))
