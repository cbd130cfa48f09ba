"""The layering docs/architecture.md draws: no module imports a layer below it, no cycles,
and the core never imports LangChain or DSPy."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# top to bottom, as in docs/architecture.md; a module may import from its own layer or the ones above
LAYERS = [
    {"errors", "_io", "_registry", "_validation", "task", "data", "models"},
    {"scoring", "attribution", "signatures", "store", "distributed"},
    {"probing"},
    {"embeddings", "neighbours"},
    {"strategies", "retrieval"},
    {"pipelines"},
    {"annotation"},
    {"active", "evaluate", "ordering", "experiment", "stats", "workflow"},
    {"cli", "demo", "plots"},
]
SIBLINGS = [{"strategies", "retrieval"}]  # same layer, yet neither may import the other


def _modules() -> dict[str, set[str]]:
    """neuroshot module (top-level name, ``strategies`` for the whole package) -> what it imports."""
    out: dict[str, set[str]] = {}
    root = SRC / "neuroshot"
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        package = parts[:-1]
        name = parts[1] if len(parts) > 1 else "__init__"
        if name == "__init__":
            continue  # the public table lazily names everything
        deps = out.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                target = package[:len(package) - node.level + 1] + (node.module.split(".") if node.module else [])
                names = [target[1]] if len(target) > 1 else [a.name for a in node.names]
                deps.update(n for n in names if n != name)
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("neuroshot."):
                deps.add(node.module.split(".")[1])
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                deps.update(f"<external>{m.split('.')[0]}" for m in mods)
    return out


def _layer(name: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if name in layer)


def test_every_module_has_a_layer():
    missing = sorted(set(_modules()) - set().union(*LAYERS))
    assert not missing, f"add these modules to a layer (and to the picture in docs/architecture.md): {missing}"


def test_no_module_imports_a_layer_below_it():
    bad = [(m, d) for m, deps in _modules().items() for d in deps
           if not d.startswith("<external>") and _layer(d) > _layer(m)]
    assert not bad, bad


def test_strategies_and_retrievers_do_not_import_each_other():
    modules = _modules()
    for pair in SIBLINGS:
        for name in pair:
            assert not (modules[name] & (pair - {name})), f"{name} imports {pair - {name}}"


def test_the_core_never_imports_langchain_or_dspy():
    external = {d for deps in _modules().values() for d in deps if d.startswith("<external>")}
    assert not {e for e in external if e.split(">")[1] in {"langchain", "langchain_core", "dspy",
                                                            "langchain_neuroshot", "dspy_neuroshot"}}


def test_missing_shared_data_skips_locally_and_fails_in_ci(tmp_path, monkeypatch):
    import pytest
    from conftest import REQUIRE_SHARED, require_shared

    monkeypatch.delenv(REQUIRE_SHARED, raising=False)
    assert require_shared(tmp_path) == tmp_path
    with pytest.raises(pytest.skip.Exception):
        require_shared(tmp_path / "absent")
    monkeypatch.setenv(REQUIRE_SHARED, "1")
    with pytest.raises(pytest.fail.Exception, match="absent"):
        require_shared(tmp_path / "absent")


def test_readme_public_api_lists_exactly_the_public_names_and_each_has_a_docstring():
    import inspect
    import re

    import neuroshot

    readme = (SRC.parent / "README.md").read_text()
    section = readme.split("## Public API", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(\w+)`", section)) - {"neuroshot"}
    assert listed == set(neuroshot.__all__), listed ^ set(neuroshot.__all__)
    objects = {n: getattr(neuroshot, n) for n in neuroshot.__all__}
    undocumented = [n for n, obj in objects.items() if (inspect.isclass(obj) or inspect.isfunction(obj))
                    and not (obj.__doc__ or "").strip()]
    assert not undocumented, undocumented
