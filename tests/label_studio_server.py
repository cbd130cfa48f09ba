"""A real Label Studio server for the tests: started once per run from the registry's package.

``.ci/install`` puts ``label-studio==1.23.2`` into its own environment, ``.venv-labelstudio/``
(it pins Django and friends, which must not meet the project's environment), and runs the
database migrations once into ``.venv-labelstudio/template-data`` so that a test run copies a
migrated SQLite file instead of migrating for a minute. ``$NEUROSHOT_LABEL_STUDIO`` may name
another ``label-studio`` executable. Without one the tests skip on a developer's machine and fail
under ``$NEUROSHOT_REQUIRE_LABEL_STUDIO`` (``.ci/run`` sets it).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-labelstudio"
REQUIRE = "NEUROSHOT_REQUIRE_LABEL_STUDIO"


@dataclass
class Server:
    url: str
    token: str
    username: str
    password: str
    data_dir: Path


def executable() -> Path:
    """The ``label-studio`` command, or stop the test (skip locally, fail under ``$NEUROSHOT_REQUIRE_LABEL_STUDIO``)."""
    from conftest import require_present

    path = Path(os.environ.get("NEUROSHOT_LABEL_STUDIO") or VENV / "bin" / "label-studio")
    return require_present(path, REQUIRE, f"Label Studio not found at {path} (bash .ci/install installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(data_dir: Path, token: str, username: str, password: str) -> dict[str, str]:
    """The settings a local server needs (docs/label-studio.md shows the same)."""
    return {**os.environ, "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": "",  # sentry-sdk 3 crashes start-up otherwise
            "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "LABEL_STUDIO_USERNAME": username,
            "LABEL_STUDIO_PASSWORD": password, "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true"}


def start(data_dir: Path, timeout: float = 240.0):
    """Start a server on 127.0.0.1 with SQLite in ``data_dir``; return (process, Server) once it answers."""
    import httpx

    exe = executable()
    template = exe.parent.parent / "template-data"
    if template.is_dir() and not data_dir.exists():
        shutil.copytree(template, data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    token, username, password = secrets.token_hex(20), "annotator@localhost", secrets.token_hex(8)
    port = free_port()
    log = open(data_dir / "server.log", "wb")
    proc = subprocess.Popen([str(exe), "start", "--internal-host", "127.0.0.1", "--port", str(port), "--no-browser"],
                            env=server_env(data_dir, token, username, password), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (data_dir / "server.log").read_text()[-2000:]
            raise RuntimeError(f"Label Studio exited ({proc.returncode}): {tail}")
        try:
            if httpx.get(f"{url}/api/current-user/whoami", headers={"Authorization": f"Token {token}"},
                         timeout=5).status_code == 200:
                return proc, Server(url, token, username, password, data_dir)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    stop(proc)
    raise RuntimeError(f"Label Studio did not answer within {timeout:.0f} s")


def stop(proc: subprocess.Popen) -> None:
    """End the server this module started (its own process group) and wait for it."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def annotate(client, task_id: int, label: str) -> None:
    """Submit ``label`` for the task as the client's user, the way the labeling page does."""
    result = [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]
    client.request("POST", f"/api/tasks/{task_id}/annotations/", retry=False, json={"result": result})
