"""`coordinator dashboard [STUDY]`: a study in optuna-dashboard, a web page over its journal file.

The page reads the journal as the report does, read-only: the dashboard's buttons that would change a
study (tell a trial, rename, delete, notes) are refused, since only the coordinator that owns a study
writes it. It can be opened while a run goes on; it shows trials as they are told.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from wsgiref.simple_server import make_server

from coordinator.report import ReportError, newest_study
from coordinator.study import STUDIES_DIR, read_only_storage, storage_path, study_names


def journal_of(name: str | None, studies_dir: Path = STUDIES_DIR) -> tuple[str, Path]:
    """The study's name (default: the newest) and its journal; ReportError when there is none."""
    name = name or newest_study(studies_dir)
    path = storage_path(name, studies_dir)
    if not path.is_file():
        raise ReportError(f"{path}: no such study (known: {', '.join(study_names(studies_dir)) or 'none'})")
    return name, path


def serve(journal: Path, host: str, port: int, stop_requested: Callable[[], str | None]) -> None:
    """Serve the dashboard until `stop_requested` says why to stop. The server runs in a thread of its own:
    wsgiref swallows an exception raised inside a request, so a signal must not be handled there."""
    from optuna_dashboard import wsgi

    server = make_server(host, port, wsgi(read_only_storage(journal)))  # OSError here: the port is taken
    thread = threading.Thread(target=server.serve_forever, name="dashboard", daemon=True)
    thread.start()
    try:
        while stop_requested() is None and thread.is_alive():
            thread.join(0.2)
    finally:
        server.shutdown()
        server.server_close()
