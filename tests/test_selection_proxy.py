"""The validation proxy: probe settings given with --probe reach the probe (critical fraction here)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from conftest import require_shared

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import selection_proxy  # noqa: E402
from shared_sets import DEFAULT_DATA  # noqa: E402



@pytest.fixture(autouse=True)
def _shared_data():
    require_shared(DEFAULT_DATA)


def _header(tiny_lm, store: Path, probe: str) -> str:
    args = selection_proxy.parse_args(["--sets", "trec", "--strategies", "random", "neuron_coverage", "--retrievers",
                                       "neuron", "--budgets", "4", "--seeds", "0", "--validation", "8", "--pool-size",
                                       "24", "--store", str(store), "--probe", probe])
    lines = selection_proxy.run_set(tiny_lm, "trec", args)
    assert len([line for line in lines if line.startswith("| `")]) == 2
    return lines[0]


def test_probe_settings_reach_the_probe(tiny_lm, tmp_path):
    narrow = _header(tiny_lm, tmp_path, '{"critical_fraction": 0.01}')
    wide = _header(tiny_lm, tmp_path, '{"critical_fraction": 0.5}')  # same stored probes, other critical neurons
    assert 'probe {"critical_fraction": 0.5}' in wide
    share = [int(re.search(r"critical neuron is in (\d+)%", h).group(1)) for h in (narrow, wide)]
    assert share[0] > share[1]  # half the neurons critical: the average one fires for fewer items
