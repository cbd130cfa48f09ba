"""The benchmarks' view of the shared data: tasks, fixed subsets, seeded samples, disjoint splits."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from conftest import require_shared

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from shared_sets import DEFAULT_DATA, load_shared_set, subset_labels  # noqa: E402



@pytest.fixture(autouse=True)
def _shared_data():
    require_shared(DEFAULT_DATA)


def test_banking77_subset_is_fixed_and_restricts_pool_and_test():
    data = load_shared_set("banking77_15", pool_size=300)
    labels = set(data.task.labels)
    assert len(labels) == 15 and labels == set(subset_labels(load_shared_set("banking77").task.labels, 15))
    assert {r.label for r in data.pool} <= labels and {r.label for r in data.test} <= labels
    assert all("_" not in v for v in data.task.verbalized)  # snake_case intents read as words


def test_samples_are_seeded_and_test_items_never_in_the_pool():
    a = load_shared_set("trec", pool_size=100, test_size=50)
    b = load_shared_set("trec", pool_size=100, test_size=50)
    assert [r.id for r in a.pool] == [r.id for r in b.pool] and [r.id for r in a.test] == [r.id for r in b.test]
    assert len(a.pool) == 100 and len(a.test) == 50
    assert not {r.text for r in a.pool} & {r.text for r in a.test}


def test_validation_holds_out_pool_items_instead_of_the_test_split():
    data = load_shared_set("trec", validation=40)
    assert len(data.test) == 40 and all("-pool-" in r.id for r in data.test)
    assert not {r.id for r in data.pool} & {r.id for r in data.test}


def test_medical_abstracts_are_truncated_to_96_tokens():
    assert load_shared_set("medical_abstracts", pool_size=10, test_size=10).task.max_text_tokens == 96


def test_named_model_is_assembled_once_into_the_cache(tmp_path, monkeypatch):
    import types

    import shared_sets

    calls = []
    fake = types.SimpleNamespace(MODEL_NAME="tiny.gguf",
                                 assemble=lambda target: calls.append(target) or Path(target).write_bytes(b"GGUF"))
    monkeypatch.setitem(sys.modules, "fake_gguf_wheel", fake)
    monkeypatch.setitem(shared_sets.NAMED_MODELS, "tiny-model", "fake_gguf_wheel")
    monkeypatch.setenv("NEUROSHOT_CACHE", str(tmp_path))
    first, second = shared_sets.model_spec("tiny-model"), shared_sets.model_spec("tiny-model")
    assert first == second == str(tmp_path / "gguf" / "tiny.gguf") and len(calls) == 1
    assert shared_sets.model_spec("default") == "default"  # anything else goes to load_model as it is
    monkeypatch.setitem(shared_sets.NAMED_MODELS, "missing-model", "no_such_wheel_installed")
    with pytest.raises(SystemExit, match="not installed"):
        shared_sets.model_spec("missing-model")


@pytest.mark.parametrize("validation", [None, 40])
def test_static_resampled_draws_a_pool_per_seed_that_never_holds_a_scored_item(validation):
    import head_to_head

    args = head_to_head.parse_args(["--sets", "trec", "--regimes", head_to_head.RESAMPLED])
    data = load_shared_set("trec", pool_size=200, test_size=50, validation=validation)
    pools = [head_to_head._pool_of_seed("trec", args, data, seed) for seed in (0, 1, 2)]
    assert [r.id for r in pools[0]] == [r.id for r in data.pool]  # seed 0: the fixed regime's pool
    scored = {r.id for r in data.test}
    for pool in pools:
        assert len(pool) == 200 and len({r.id for r in pool}) == 200 and not {r.id for r in pool} & scored
    assert {r.id for r in pools[1]} != {r.id for r in pools[0]} != {r.id for r in pools[2]}
