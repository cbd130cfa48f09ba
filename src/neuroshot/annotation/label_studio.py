"""A live loop with a running Label Studio server: annotators label in neuroshot's order, the plan follows them.

Polling over Label Studio's REST API (the endpoints ``label-studio-sdk`` 2.x calls, spoken with
``httpx``), so it works with any reachable server and needs no webhook into this machine:

- :func:`push` creates the project if absent (choices on the text, from the task's labels), imports
  the pool once (each task's ``data.id`` is the pool id; a rerun imports only what is missing),
  plans round 1 and publishes it: every planned task gets a prediction of this round's
  ``model_version`` whose ``score`` is its rank, and the project's ``model_version`` is set to it,
  so that Community edition's "Uncertainty sampling" (lowest score of the project's model version
  first) serves the tasks in plan order.
- :class:`Follower` polls the annotations, appends each new label to the crash-safe
  :class:`~neuroshot.annotation.AnnotationLog`, and after every ``batch`` labels re-plans the
  unlabeled pool with the first ``r * batch`` labels in context (an ``active:`` round) and publishes
  round ``r + 1``.
- :func:`label_studio_pairs` / :func:`log_pairs`: the labels as ``(text, label)`` pairs for prompts.

Crash safety (``kill -9`` anywhere): the log is fsync'ed per label and ordered by annotation id;
round ``r + 1`` is a function of the pool, the settings and the first ``r * batch`` log entries only,
so a restart recomputes the same plan and the same ``model_version`` (it names a digest of the
plan); publishing checks the server's count of that version first (complete: skip; partial: delete
and import again), so nothing is published twice. The state file (``<log>.state.json``, sorted
keys, no times) is written atomically after each round is published. ``NEUROSHOT_KILL_AT=<point>``
(``logged``, ``planned``, ``imported``) makes the follower SIGKILL itself there, for fault injection.

The API key is read from ``$LABEL_STUDIO_API_KEY`` only, and never printed or written.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._io import atomic_write
from ..errors import NeuroshotError
from .files import _first_choice, _labelstudio_config
from .labels import _LabelSet
from .log import AnnotationLog

__all__ = ["API_KEY_ENV", "Follower", "LabelStudioClient", "LabelStudioUnavailable", "LoopState", "PushResult",
           "RoundPlanner", "RoundState", "TaskMap", "label_studio_pairs", "log_pairs", "push", "rank_scores",
           "read_project_labels", "state_path", "task_map_path"]

API_KEY_ENV = "LABEL_STUDIO_API_KEY"
SAMPLING = "Uncertainty sampling"  # Community edition: lowest prediction score of project.model_version first
KILL_ENV = "NEUROSHOT_KILL_AT"
_IMPORT_CHUNK = 5000  # tasks per import request


def _say(message: str) -> None:
    print(f"neuroshot: {message}", file=sys.stderr, flush=True)


def _kill_point(name: str) -> None:
    """Fault injection: SIGKILL this process at the named point when ``$NEUROSHOT_KILL_AT`` names it."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class _Transient(Exception):
    """A 5xx answer, a timeout or a dropped connection: worth retrying."""


class LabelStudioUnavailable(NeuroshotError):
    """The server stayed unreachable, or kept answering 5xx or timing out (after the retries, if any)."""


class LabelStudioClient:
    """The few Label Studio REST calls the loop needs, with retries on 5xx, timeouts and lost connections.

    ``api_key``: a legacy token or a personal access token (a JWT refresh token, exchanged for an
    access token as the SDK does); default ``$LABEL_STUDIO_API_KEY``. Transient failures are retried
    with exponential back-off (1 s, doubling, at most 30 s between tries) for up to ``max_wait``
    seconds, one line on stderr per failure; a wrong URL or key raises :class:`NeuroshotError`.
    """

    def __init__(self, url: str, api_key: str | None = None, *, timeout: float = 120.0, max_wait: float = 600.0,
                 say: Callable[[str], None] = _say) -> None:
        import httpx

        if not url or not url.startswith(("http://", "https://")):
            raise NeuroshotError(f"--url must start with http:// or https://, got {url!r}")
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        if not key.strip():
            raise NeuroshotError(f"no API key: set ${API_KEY_ENV} (Label Studio: Account & Settings > "
                                 "Personal Access Token, or the legacy token)")
        self.url, self.max_wait, self._say = url.rstrip("/"), max_wait, say
        self._key = key.strip()
        self._http = httpx.Client(base_url=self.url, timeout=timeout, follow_redirects=False)
        self._auth: str | None = None

    def __repr__(self) -> str:  # never shows the key
        return f"LabelStudioClient({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def _authorization(self) -> str:
        if self._auth is None:
            if self._key.count(".") == 2:  # a personal access token (JWT refresh token)
                answer = self._send("POST", "/api/token/refresh/", json={"refresh": self._key}, auth=False)
                self._auth = f"Bearer {answer.json()['access']}"
            else:
                self._auth = f"Token {self._key}"
        return self._auth

    def _send(self, method: str, path: str, *, auth: bool = True, **kwargs: Any):
        import httpx

        headers = {"Authorization": self._authorization()} if auth else {}
        try:
            answer = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.ConnectError as exc:
            raise _Transient(f"cannot connect ({_reason(exc)})") from None
        except httpx.TimeoutException:
            raise _Transient("timed out") from None
        except httpx.TransportError as exc:
            raise _Transient(f"connection lost ({_reason(exc)})") from None
        if 300 <= answer.status_code < 400:
            raise NeuroshotError(f"{method} {self.url}{path} was redirected to {answer.headers.get('location')!r}: "
                                 f"is {self.url} a Label Studio server (its address without a path)?")
        if answer.status_code >= 500:
            raise _Transient(f"{answer.status_code} {answer.reason_phrase}")
        if answer.status_code in (401, 403):
            raise NeuroshotError(f"Label Studio at {self.url} rejected the API key in ${API_KEY_ENV} "
                                 f"({answer.status_code} on {method} {path}): set the key of a user of that server")
        if answer.status_code == 404:
            raise NeuroshotError(f"{method} {self.url}{path}: 404 Not Found (is {self.url} a Label Studio server, "
                                 "and does the project still exist?)")
        if answer.status_code >= 400:
            raise NeuroshotError(f"Label Studio refused {method} {path}: {answer.status_code} {_detail(answer)}")
        return answer

    def request(self, method: str, path: str, *, retry: bool = True, **kwargs: Any) -> Any:
        """One call, its JSON answer; transient failures retried when ``retry`` (idempotent calls only)."""
        delay, waited, attempt = 1.0, 0.0, 1
        while True:
            try:
                answer = self._send(method, path, **kwargs)
                return answer.json() if answer.content else None
            except _Transient as exc:
                if not retry or waited + delay > self.max_wait:
                    raise LabelStudioUnavailable(f"Label Studio at {self.url}: {exc} on {method} {path}"
                                         + (f", still after {waited:.0f} s of retries" if retry else "")) from None
                self._say(f"Label Studio at {self.url}: {exc} on {method} {path}; "
                          f"retrying in {delay:.0f} s (attempt {attempt + 1})")
                time.sleep(delay)
                waited, delay, attempt = waited + delay, min(delay * 2, 30.0), attempt + 1

    def check(self) -> dict:
        """Who the key belongs to; a clear error when the server cannot be reached (no retries) or refuses the key."""
        try:
            return self._send("GET", "/api/current-user/whoami").json()
        except _Transient as exc:
            raise NeuroshotError(f"cannot reach Label Studio at {self.url}: {exc}; is it running, and is --url "
                                 "right?") from None
        except ValueError:
            raise NeuroshotError(f"{self.url} answered, but not as a Label Studio server would") from None

    # projects
    def find_project(self, title: str) -> dict | None:
        """The project called ``title`` (the first, if several), or None."""
        page = 1
        while True:
            answer = self.request("GET", "/api/projects/", params={"title": title, "page": page, "page_size": 100})
            rows = answer["results"] if isinstance(answer, dict) else answer
            found = [p for p in rows if p.get("title") == title]
            if found:
                return min(found, key=lambda p: p["id"])
            if not isinstance(answer, dict) or not answer.get("next"):
                return None
            page += 1

    def create_project(self, title: str, labels: Sequence[str]) -> dict:
        return self.request("POST", "/api/projects/", retry=False, json={
            "title": title, "label_config": _labelstudio_config(_LabelSet(labels)), "sampling": SAMPLING,
            "maximum_annotations": 1, "show_collab_predictions": True})

    def update_project(self, project_id: int, **fields: Any) -> dict:
        return self.request("PATCH", f"/api/projects/{project_id}/", json=fields)

    def tasks(self, project_id: int, *, annotated_only: bool = False) -> list[dict]:
        """Every task of the project (or those with annotations), with data and annotations, in one call."""
        params = {"exportType": "JSON", "download_all_tasks": "false" if annotated_only else "true"}
        return self.request("GET", f"/api/projects/{project_id}/export", params=params)

    def import_tasks(self, project_id: int, tasks: list[dict]) -> dict:
        """Create ``tasks`` (with their predictions) in one request; the answer's ``task_ids`` are in their order."""
        return self.request("POST", f"/api/projects/{project_id}/import", retry=False, json=tasks,
                            params={"commit_to_project": "true", "return_task_ids": "true"})

    def model_versions(self, project_id: int) -> dict[str, int]:
        """``{model_version: number of predictions}`` of the project."""
        answer = self.request("GET", f"/api/projects/{project_id}/model-versions/")
        return {str(k): int(v) for k, v in (answer or {}).items()}

    def delete_model_version(self, project_id: int, version: str) -> None:
        self.request("DELETE", f"/api/projects/{project_id}/model-versions/", json={"model_version": version})

    def import_predictions(self, project_id: int, predictions: list[dict]) -> None:
        self.request("POST", f"/api/projects/{project_id}/import/predictions", retry=False, json=predictions)

    def next_task(self, project_id: int) -> dict | None:
        """The task Label Studio serves this key's user next (it stays locked to the user until submitted)."""
        answer = self.request("GET", f"/api/projects/{project_id}/next")
        return answer if isinstance(answer, dict) and answer.get("id") else None


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    return text.split("] ")[-1][:120]


def _detail(answer: Any) -> str:
    try:
        body = answer.json()
    except ValueError:
        return answer.text[:200]
    return json.dumps(body)[:300]


def _until_done(client: LabelStudioClient, what: str, done: Callable[[], bool], attempt: Callable[[], Any]) -> None:
    """Call ``attempt`` until ``done()``; ``done`` asks the server before every try, so a try whose answer
    was lost (a timeout after the server committed it) is never repeated. Transient failures: one line each,
    back-off as in :meth:`LabelStudioClient.request`."""
    delay, waited = 1.0, 0.0
    while not done():
        try:
            attempt()
        except LabelStudioUnavailable as exc:
            if waited + delay > client.max_wait:
                raise
            client._say(f"{what}: {exc}; checking what the server has, then trying again in {delay:.0f} s")
            time.sleep(delay)
            waited, delay = waited + delay, min(delay * 2, 30.0)


# --- project, config and pool ------------------------------------------------------------------------------------


def config_labels(label_config: str) -> list[str]:
    """The choice values of a labeling config's ``Choices`` controls."""
    try:
        root = ET.fromstring(label_config)
    except ET.ParseError as exc:
        raise NeuroshotError(f"the project's labeling config is not valid XML ({exc})") from None
    return [c.get("value") or c.get("alias") or "" for choices in root.iter("Choices") for c in choices.iter("Choice")]


def ensure_project(client: LabelStudioClient, title: str, labels: Sequence[str]) -> dict:
    """The project called ``title``, created with the task's labels if absent; an existing project's
    choices must be exactly the task's labels (ignoring case), and its sampling is set to uncertainty."""
    project = client.find_project(title)
    if project is None:
        return client.create_project(title, labels)
    given = _LabelSet(labels)
    found = config_labels(project.get("label_config") or "")
    if sorted(x.casefold() for x in found) != sorted(x.casefold() for x in given.names):
        raise NeuroshotError(f"project {title!r} (id {project['id']}) labels with "
                             f"{', '.join(found) or 'no choices'}, but the task's labels are {given}: "
                             "use another --project or the project's labels")
    if project.get("sampling") != SAMPLING or project.get("maximum_annotations") != 1:
        project = client.update_project(project["id"], sampling=SAMPLING, maximum_annotations=1)
    return project


def task_ids_by_pool_id(tasks: Sequence[dict]) -> dict[str, int]:
    """``{pool id: Label Studio task id}`` of tasks imported by neuroshot (``data.id``)."""
    out: dict[str, int] = {}
    for t in tasks:
        data = t.get("data") or {}
        if "id" in data:
            out.setdefault(str(data["id"]), int(t["id"]))
    return out


class TaskMap:
    """``{pool id: Label Studio task id}`` of a project, cached in ``path`` (sorted keys, atomic writes).

    Listing 10,000 tasks costs Label Studio most of a minute, importing them a few seconds: so the
    ids the imports return are kept, and the full listing runs only when the cache does not account
    for every task of the project (a crash mid-import, tasks added by hand).
    """

    def __init__(self, client: LabelStudioClient, project_id: int, path: Path) -> None:
        self.client, self.project_id, self.path = client, project_id, path
        self.ids: dict[str, int] = {}
        cached = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
        count = int(client.request("GET", f"/api/projects/{project_id}/")["task_number"])
        if cached and cached.get("project_id") == project_id and len(cached.get("tasks", {})) == count:
            self.ids = {str(k): int(v) for k, v in cached["tasks"].items()}
        elif count:
            self.resync()

    def resync(self) -> None:
        self.ids = task_ids_by_pool_id(self.client.tasks(self.project_id))
        self.write()

    def write(self) -> None:
        with atomic_write(self.path) as fh:
            json.dump({"project_id": self.project_id, "tasks": self.ids}, fh, sort_keys=True)

    def import_missing(self, ids: Sequence[str], texts: Sequence[str], predictions: Mapping[str, dict]) -> int:
        """Import the items the project lacks (with their predictions, in the same requests); return how many.
        A rerun, or a retry after a lost answer, imports nothing twice."""
        before, text_of = len(self.ids), dict(zip(ids, texts))
        trusted = [True]  # False after a failed or odd import: list the project's tasks before going on

        def done() -> bool:
            if not trusted[0]:
                self.resync()
                trusted[0] = True
            return all(i in self.ids for i in ids)

        def attempt() -> None:
            part = [i for i in ids if i not in self.ids][:_IMPORT_CHUNK]
            trusted[0] = False
            answer = self.client.import_tasks(self.project_id, [
                {"data": {"id": i, "text": text_of[i]}, **({"predictions": [predictions[i]]} if i in predictions
                                                            else {})} for i in part])
            created = (answer or {}).get("task_ids") or []
            if len(created) == len(part):
                self.ids.update(zip(part, map(int, created)))
                self.write()
                trusted[0] = True

        _until_done(self.client, "importing the pool", done, attempt)
        return len(self.ids) - before


def task_map_path(log_path: str | os.PathLike) -> Path:
    """Where the pool id -> task id cache lives for an annotation log."""
    log_path = Path(log_path)
    return log_path.with_name(log_path.name + ".tasks.json")


# --- rounds -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoundState:
    """One published round: its ``model_version``, the planned pool ids in order, the labels it was planned with."""

    round: int
    model_version: str
    ids: list[str]
    labels_used: int


def rank_scores(n: int) -> list[float]:
    """Prediction scores for ranks 1..n: increasing, in (0, 1), so the lowest (served first) is rank 1."""
    return [(rank) / (n + 1) for rank in range(1, n + 1)]


def model_version(round_: int, ids: Sequence[str], settings: Mapping[str, Any]) -> str:
    """A round's model version: its number and a digest of its plan and settings (the same plan, the same name)."""
    blob = json.dumps({"ids": list(ids), "settings": dict(settings)}, sort_keys=True).encode()
    return f"neuroshot-round{round_}-{hashlib.sha256(blob).hexdigest()[:10]}"


def _prediction(task_id: int | None, version: str, score: float, label: str | None) -> dict:
    result = [] if label is None else [
        {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]
    out = {"model_version": version, "score": score, "result": result}
    return out if task_id is None else {"task": task_id, **out}


def publish_round(client: LabelStudioClient, project_id: int, state: RoundState, task_ids: Mapping[str, int],
                  suggested: Mapping[str, str] | None = None) -> None:
    """Publish a round's plan: one prediction per planned task (rank order as score), in one bulk call,
    then the project's ``model_version``. Idempotent: a version already complete on the server is not
    imported again; a partial one (a crash mid-import) is deleted and imported again."""
    scores = rank_scores(len(state.ids))
    rows = [_prediction(task_ids[i], state.model_version, s, (suggested or {}).get(i))
            for i, s in zip(state.ids, scores)]

    tries = [0]

    def done() -> bool:
        count = client.model_versions(project_id).get(state.model_version, 0)
        if 0 < count != len(rows):
            client.delete_model_version(project_id, state.model_version)
            return False
        if count != len(rows) and tries[0] >= 3:
            raise NeuroshotError(f"Label Studio did not store the {len(rows)} predictions of round {state.round}")
        return count == len(rows)

    def attempt() -> None:
        tries[0] += 1
        client.import_predictions(project_id, rows)

    _until_done(client, f"publishing round {state.round}", done, attempt)
    _kill_point("imported")
    client.update_project(project_id, model_version=state.model_version, sampling=SAMPLING)


@dataclass
class LoopState:
    """What the follower keeps on disk beside the annotation log (deterministic: sorted keys, no times)."""

    url: str
    project_id: int
    project: str
    labels: list[str]
    settings: dict
    rounds: list[RoundState] = field(default_factory=list)

    @classmethod
    def read(cls, path: Path) -> LoopState | None:
        if not path.exists():
            return None
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            raw["rounds"] = [RoundState(**r) for r in raw.get("rounds", [])]
            return cls(**raw)
        except (ValueError, TypeError) as exc:
            raise NeuroshotError(f"{path}: not a neuroshot Label Studio state file ({exc}); delete it to start "
                                 "over") from None

    def write(self, path: Path) -> None:
        data = {**self.__dict__, "rounds": [r.__dict__ for r in self.rounds]}
        with atomic_write(path) as fh:
            json.dump(data, fh, sort_keys=True, indent=1, ensure_ascii=False)
            fh.write("\n")


def state_path(log_path: str | os.PathLike) -> Path:
    """Where the loop's state lives for an annotation log."""
    log_path = Path(log_path)
    return log_path.with_name(log_path.name + ".state.json")


class RoundPlanner:
    """Plans round ``r`` from the pool's zero-shot probe and the labels so far (an ``active:`` round).

    Round 1 is the strategy on the zero-shot probe; later rounds re-probe the unlabeled items with
    the labels so far in context (:class:`~neuroshot.strategies.active.ActiveStrategy`). The seed of
    round ``r`` is :func:`~neuroshot.strategies.active.round_seed` (as in ``active_plan``).
    """

    def __init__(self, lm: Any, task: Any, ids: Sequence[str], texts: Sequence[str], strategy: Any, *,
                 seed: int = 0, probe_kwargs: Mapping[str, Any] | None = None, progress: bool = True) -> None:
        self.lm, self.task, self.ids, self.texts = lm, task, list(ids), list(texts)
        self.strategy, self.seed, self.probe_kwargs = strategy, seed, dict(probe_kwargs or {})
        self.progress = progress
        self._pool = None

    @property
    def settings(self) -> dict:
        """What the plan depends on beside the labels (recorded in the state; a change is refused)."""
        import inspect

        from ..probing import probe

        defaults = {k: p.default for k, p in inspect.signature(probe).parameters.items()}
        safe = {k: self.probe_kwargs.get(k, defaults[k]) for k in ("method", "objective", "top_k", "critical_fraction")}
        return {"strategy": self.strategy.name, "strategy_params": _jsonable(self.strategy.get_params()),
                "seed": self.seed, "model": getattr(self.lm, "name", str(self.lm)), "probe": _jsonable(safe),
                "task": _jsonable(self.task.__dict__ if hasattr(self.task, "__dict__") else str(self.task)),
                "pool": hashlib.sha256(json.dumps([self.ids, self.texts]).encode()).hexdigest()[:16]}

    def pool_probe(self):
        if self._pool is None:
            from ..probing import probe

            self._pool = probe(self.lm, self.task, self.texts, ids=self.ids, progress=self.progress,
                               **self.probe_kwargs)
        return self._pool

    def plan(self, round_: int, size: int, labels: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
        """The round's pool ids in plan order and the model's suggested label for each."""
        from ..strategies.active import ActiveStrategy, round_seed

        index = {i: n for n, i in enumerate(self.ids)}
        labeled = {index[i]: label for i, label in labels.items()}
        size = min(size, len(self.ids) - len(labeled))
        if size < 1:
            return [], {}
        pool = self.pool_probe()
        seed = round_seed(self.seed, round_)
        if labeled:
            active = ActiveStrategy.around(self.strategy, lm=self.lm, probe_kwargs=self.probe_kwargs,
                                           progress=self.progress)
            plan = active.plan(pool, size, labeled=labeled, seed=seed)
            probed, rows = active.round_probe_, active.round_rows_
        else:
            plan = self.strategy.plan(pool, size, seed=seed)
            probed, rows = pool, list(range(len(self.ids)))
        row_of = {i: r for r, i in enumerate(rows)}
        chosen = [self.ids[p.index] for p in plan.picks]
        suggested = {self.ids[p.index]: self.task.labels[int(probed.probs[row_of[p.index]].argmax())]
                     for p in plan.picks}
        return chosen, suggested


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str, sort_keys=True))


@dataclass
class PushResult:
    """What :func:`push` did: the project, the tasks imported now, and the round published."""

    project_id: int
    imported: int
    round: RoundState


def push(client: LabelStudioClient, title: str, planner: RoundPlanner, budget: int, log_path: str | os.PathLike, *,
         pre_annotate: bool = False) -> PushResult:
    """Create the project if absent, import the pool once, plan round 1 and publish it (see the module).

    The state goes to :func:`state_path` of ``log_path`` (the annotation log :class:`Follower` appends to).
    A rerun imports and publishes nothing twice; after ``follow`` has published later rounds it leaves them.
    """
    labels = list(planner.task.labels)
    client.check()
    project = ensure_project(client, title, labels)
    pid = int(project["id"])
    spath = state_path(log_path)
    state = LoopState.read(spath)
    if state is not None:
        _check_state(state, client, pid, planner)
    AnnotationLog(log_path, labels)  # a log with other labels fails here, before probing
    ids, suggested = planner.plan(1, budget, {})
    _kill_point("planned")
    settings = {**planner.settings, "budget": budget}
    version = model_version(1, ids, settings)
    rnd = RoundState(1, version, ids, 0)
    tasks = TaskMap(client, pid, task_map_path(log_path))
    first_time = not tasks.ids and not client.model_versions(pid).get(version)
    scores = dict(zip(ids, rank_scores(len(ids))))
    inline = {i: _prediction(None, version, scores[i], suggested[i] if pre_annotate else None) for i in ids} \
        if first_time else {}  # a new project: the tasks and their predictions in the same import
    imported = tasks.import_missing(planner.ids, planner.texts, inline)
    if state is not None and len(state.rounds) > 1:
        _say(f"project {title!r} is at round {len(state.rounds)}: round 1 is not published again "
             f"(run `neuroshot label-studio follow` to continue)")
        return PushResult(pid, imported, state.rounds[-1])
    publish_round(client, pid, rnd, tasks.ids, suggested if pre_annotate else None)
    LoopState(client.url, pid, title, labels, settings, [rnd]).write(spath)
    return PushResult(pid, imported, rnd)


def _check_state(state: LoopState, client: LabelStudioClient, project_id: int, planner: RoundPlanner) -> None:
    if state.project_id != project_id or state.url != client.url:
        raise NeuroshotError(f"the state beside the annotation log belongs to project {state.project_id} at "
                             f"{state.url}; use another --log for this project")
    settings = {k: v for k, v in state.settings.items() if k != "budget"}
    if settings != planner.settings:
        changed = sorted(k for k in set(settings) | set(planner.settings)
                         if settings.get(k) != planner.settings.get(k))
        raise NeuroshotError(f"the loop was started with other settings ({', '.join(changed)} differ); use the "
                             "same options as `push`, or another --log to start a new loop")


@dataclass(frozen=True)
class NewLabel:
    """One annotation read from the server: the pool id, its label, the Label Studio task and annotation ids."""

    id: str
    label: str
    task_id: int
    annotation_id: int
    text: str = ""


def read_project_labels(client: LabelStudioClient, project_id: int, labels: Sequence[str]) -> list[NewLabel]:
    """Every labelled task's latest non-cancelled annotation, in the order the annotations were made.

    A label outside the task's labels, or a task neuroshot did not import, raises :class:`NeuroshotError`.
    """
    label_set = _LabelSet(labels)
    out = []
    for t in client.tasks(project_id, annotated_only=True):
        anns = sorted((a for a in t.get("annotations") or [] if not a.get("was_cancelled")), key=lambda a: a["id"])
        if not anns:
            continue
        data = t.get("data") or {}
        if "id" not in data:
            raise NeuroshotError(f"Label Studio task {t['id']} has no data.id: it was not imported by neuroshot")
        value = _first_choice(anns[-1].get("result"))
        where = f"Label Studio task {t['id']} (pool id {data['id']!r}), annotation {anns[-1]['id']}"
        label = label_set.resolve(value, where)
        if label is not None:
            out.append(NewLabel(str(data["id"]), label, int(t["id"]), int(anns[0]["id"]), str(data.get("text", ""))))
    return sorted(out, key=lambda x: x.annotation_id)


class Follower:
    """The live loop: poll annotations, log each new label, publish a new round after every ``batch`` labels.

    Round ``r + 1`` is planned with the first ``r * batch`` labels of the log (in annotation order),
    ``batch`` items large. :meth:`step` does one poll (and any rounds due); :meth:`run` steps until
    ``rounds`` rounds are published and ``rounds * batch`` labels are logged.
    """

    def __init__(self, client: LabelStudioClient, title: str, planner: RoundPlanner, log_path: str | os.PathLike,
                 *, batch: int, rounds: int, pre_annotate: bool = False) -> None:
        self.client, self.planner, self.batch, self.rounds = client, planner, batch, rounds
        self.pre_annotate = pre_annotate
        self.log_path, self.spath = Path(log_path), state_path(log_path)
        client.check()
        state = LoopState.read(self.spath)
        if state is None:
            raise NeuroshotError(f"no loop state at {self.spath}: run `neuroshot label-studio push` first "
                                 "(with the same --log)")
        project = client.find_project(title)
        if project is None or int(project["id"]) != state.project_id:
            raise NeuroshotError(f"project {title!r} is not the one `push` published to ({state.project} at "
                                 f"{state.url}, id {state.project_id})")
        _check_state(state, client, state.project_id, planner)
        self.state = state
        self.log = AnnotationLog(self.log_path, planner.task.labels)
        self._task_ids: dict[str, int] | None = None
        pool = set(planner.ids)
        unknown = [i for i in self.log.labels if i not in pool]
        if unknown:
            raise NeuroshotError(f"{self.log_path}: ids not in the pool: {', '.join(unknown[:5])}")

    @property
    def done(self) -> bool:
        """``rounds`` rounds published and ``rounds * batch`` labels logged, or every pool item labelled."""
        if len(self.log) >= len(self.planner.ids):
            return True
        return len(self.state.rounds) >= self.rounds and len(self.log) >= self.rounds * self.batch

    def poll(self) -> list[NewLabel]:
        """Append the labels the log lacks (or whose label changed), in annotation order; return them."""
        new = []
        logged = self.log.labels
        pool = set(self.planner.ids)
        for item in read_project_labels(self.client, self.state.project_id, self.planner.task.labels):
            if item.id not in pool:
                raise NeuroshotError(f"Label Studio task {item.task_id}: pool id {item.id!r} is not in the pool")
            if logged.get(item.id) != item.label:
                self.log.add(item.id, item.label)
                new.append(item)
        if new:
            _kill_point("logged")
        return new

    def _publish_due(self) -> list[RoundState]:
        published = []
        while len(self.state.rounds) < self.rounds and len(self.log) >= len(self.state.rounds) * self.batch:
            r = len(self.state.rounds) + 1
            used = (r - 1) * self.batch
            labels = dict(list(self.log.labels.items())[:used])
            _say(f"round {r}: planning {self.batch} items with {used} labels")
            ids, suggested = self.planner.plan(r, self.batch, labels)
            if not ids:
                _say("every pool item is labelled: nothing left to plan")
                self.rounds = len(self.state.rounds)
                break
            _kill_point("planned")
            rnd = RoundState(r, model_version(r, ids, {**self.state.settings, "labels": labels}), ids, used)
            if self._task_ids is None:
                self._task_ids = TaskMap(self.client, self.state.project_id, task_map_path(self.log_path)).ids
            publish_round(self.client, self.state.project_id, rnd, self._task_ids,
                          suggested if self.pre_annotate else None)
            self.state.rounds.append(rnd)
            self.state.write(self.spath)
            _say(f"round {r} published ({rnd.model_version}): {len(ids)} tasks in plan order")
            published.append(rnd)
        return published

    def step(self) -> list[RoundState]:
        """One poll and every round now due; returns the rounds published."""
        self.poll()
        return self._publish_due()

    def run(self, interval: float = 5.0) -> None:
        """Step every ``interval`` seconds until done."""
        self._publish_due()  # a round due before a crash is published first
        while not self.done:
            self.step()
            if not self.done:
                time.sleep(interval)


# --- labels as demonstrations -------------------------------------------------------------------------------------


def label_studio_pairs(url: str, project: str | int, labels: Sequence[str], *,
                       api_key: str | None = None) -> list[tuple[str, str]]:
    """The labelled tasks of a Label Studio project as ``(text, label)`` pairs, in annotation order.

    ``project`` is its title or id; ``api_key`` defaults to ``$LABEL_STUDIO_API_KEY``. Pass them to
    LangChain (``[{"text": t, "label": l} for t, l in pairs]``) or DSPy (``dspy.Example(text=t, label=l)``).
    """
    client = LabelStudioClient(url, api_key)
    try:
        client.check()
        if isinstance(project, str):
            found = client.find_project(project)
            if found is None:
                raise NeuroshotError(f"no project {project!r} at {url}")
            project = int(found["id"])
        return [(x.text, x.label) for x in read_project_labels(client, project, labels)]
    finally:
        client.close()


def log_pairs(log_path: str | os.PathLike, pool: Sequence[Any], labels: Sequence[str]) -> list[tuple[str, str]]:
    """The labels of an annotation log as ``(text, label)`` pairs, in log order; ``pool``: the pool's
    records (``.id``, ``.text``), e.g. ``load_records("pool.jsonl")``."""
    log = AnnotationLog(log_path, labels)
    texts = {r.id: r.text for r in pool}
    missing = [i for i in log.labels if i not in texts]
    if missing:
        raise NeuroshotError(f"{log_path}: ids not in the pool: {', '.join(missing[:5])}")
    return [(texts[i], label) for i, label in log.labels.items()]
