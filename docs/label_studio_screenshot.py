"""Take docs/img/label-studio-queue.png: the Data Manager of a pushed project, ordered by prediction score.

Starts a local Label Studio (tests/label_studio_server.py), pushes 40 of the demo's support tickets
with the recommended pipeline on the default model (budget 8), adds a Data Manager view of the
planned tasks ordered by score (= plan rank), checks that ``/next`` serves the plan's first pick,
and photographs the page with headless Chromium (Debian's ``chromium``) through a small local
proxy that adds the logged-in session cookie to every request.

    python docs/label_studio_screenshot.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img" / "label-studio-queue.png"


def session_cookie(url: str, email: str, password: str) -> str:
    import httpx

    with httpx.Client(base_url=url, follow_redirects=False) as web:
        page = web.get("/user/login/")
        csrf = web.cookies.get("csrftoken") or re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)[1]
        answer = web.post("/user/login/", data={"email": email, "password": password, "csrfmiddlewaretoken": csrf},
                          headers={"Referer": f"{url}/user/login/"})
        assert answer.status_code in (302, 303), answer.status_code
        return "; ".join(f"{k}={v}" for k, v in web.cookies.items())


def proxy(target: str, cookie: str) -> ThreadingHTTPServer:
    """A local HTTP proxy to ``target`` that sends ``cookie`` with every request (headless Chromium logged in)."""
    import httpx

    client = httpx.Client(base_url=target, follow_redirects=False, timeout=60)

    class Handler(BaseHTTPRequestHandler):
        def _forward(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) or None
            headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "cookie", "content-length"}}
            answer = client.request(self.command, self.path, headers={**headers, "Cookie": cookie}, content=body)
            self.send_response(answer.status_code)
            for k, v in answer.headers.items():
                if k.lower() not in {"content-length", "transfer-encoding", "content-encoding", "connection"}:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(answer.content)))
            self.end_headers()
            self.wfile.write(answer.content)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


def main() -> None:
    sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]
    from label_studio_server import start, stop

    from neuroshot.annotation.label_studio import LabelStudioClient, LoopState, state_path
    from neuroshot.cli import main as neuroshot

    tmp = tempfile.TemporaryDirectory()
    proc, server = start(Path(tmp.name) / "data")
    try:
        rows = [json.loads(line) for line in resources.files("neuroshot").joinpath(
            "demo_data/support_tickets.jsonl").read_text().splitlines()][:40]
        labels = sorted({r["label"] for r in rows})
        pool, log = Path(tmp.name) / "tickets.jsonl", Path(tmp.name) / "labels.jsonl"
        pool.write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows))
        os.environ["LABEL_STUDIO_API_KEY"] = server.token
        assert neuroshot(["label-studio", "push", str(pool), "--labels", ",".join(labels), "--url", server.url,
                          "--project", "Support tickets", "--budget", "8", "--log", str(log), "--pre-annotate"]) == 0
        state = LoopState.read(state_path(log))
        client = LabelStudioClient(server.url)
        pid = state.project_id
        client.request("POST", "/api/dm/views/", retry=False, json={"project": pid, "data": {
            "title": "Plan order", "ordering": ["tasks:predictions_score"],
            "hiddenColumns": {"explore": ["tasks:completed_at", "tasks:annotators", "tasks:total_predictions",
                                          "tasks:cancelled_annotations", "tasks:total_annotations",
                                          "tasks:annotations_results", "tasks:annotations_ids",
                                          "tasks:predictions_model_versions", "tasks:inner_id",
                                          "tasks:file_upload", "tasks:storage_filename", "tasks:created_at",
                                          "tasks:updated_at", "tasks:updated_by", "tasks:avg_lead_time",
                                          "tasks:draft_exists"], "labeling": []}}})
        first = client.next_task(pid)["data"]["id"]
        assert first == state.rounds[0].ids[0], (first, state.rounds[0].ids)
        print("plan:", state.rounds[0].ids, "| /next serves first:", first)
        httpd = proxy(server.url, session_cookie(server.url, server.username, server.password))
        profile = Path(tmp.name) / "chromium-profile"
        profile.mkdir()
        OUT.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", "--window-size=1500,800", "--hide-scrollbars",
                        "--virtual-time-budget=30000", f"--screenshot={OUT}",
                        f"http://127.0.0.1:{httpd.server_port}/projects/{pid}/data"],
                       check=True, timeout=300, capture_output=True)
        httpd.shutdown()
        print(f"wrote {OUT}")
    finally:
        stop(proc)
        tmp.cleanup()


if __name__ == "__main__":
    main()
