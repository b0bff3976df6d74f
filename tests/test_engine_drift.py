"""One feature space per cache: an engine is checked against eager for the whole run, not its
first batch alone; a drift stops the run and nothing it computed is kept; the cache records
which engine made its vectors and what the checks found."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from conftest import h5_files, make_folder_dataset, write_image

from tlx.extractor import engines as E


class LateDrift(E.Engine):
    """Eager on its first batches, then an offset far beyond the tolerance (a kernel chosen by
    another batch shape, a corrupted artefact...)."""

    name = "latedrift"
    good_batches = 2

    def forward(self, x):
        self.calls = getattr(self, "calls", 0) + 1
        out = super().forward(x)
        return out if self.calls <= self.good_batches else out + 1e-2


class Exact(E.Engine):
    name = "exact"

    def forward(self, x):
        return super().forward(x)


@pytest.fixture
def registered(monkeypatch):
    for cls in (LateDrift, Exact):
        monkeypatch.setitem(E._ENGINES, cls.name, cls)
    monkeypatch.setattr(E, "CHOICES", (*E.CHOICES, LateDrift.name, Exact.name))
    monkeypatch.setattr(E, "RECHECK_EVERY", 2)
    for cls in (LateDrift, Exact):
        monkeypatch.setitem(E.AUTO_MIN_IMAGES, cls.name, (0, 0))


def _auto_tries(monkeypatch, name: str) -> None:
    """`--engine auto` tries ``name`` first (the CLI's choices are the real engines)."""
    monkeypatch.setitem(E.AUTO_ORDER, "cpu", (name, "eager"))


def _runner(engine: str):
    from tlx.extractor.engine import FeatureRunner
    from tlx.extractor.registry import get_backbone

    r = FeatureRunner(get_backbone("tiny_cnn").build(), "avg", device="cpu", engine=engine)
    r.forward.plan(None)
    return r


def _batch(seed: int):
    import torch

    return torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_an_engine_that_drifts_after_its_first_batch_is_stopped(registered):
    r = _runner("latedrift")
    r.forward_uint8(_batch(0))  # the first check passes
    r.forward_uint8(_batch(1))
    with pytest.raises(E.EngineDrift, match=r"latedrift gave features up to 1\.00e-02 away from eager on batch 3"):
        r.forward_uint8(_batch(2))


def test_later_checks_are_counted_in_the_report(registered):
    r = _runner("exact")
    for seed in range(5):
        r.forward_uint8(_batch(seed))
    report = r.forward.report
    assert report.checks == 3 and report.probe_images == 4 + 2 * 2, report  # batches 1, 3 and 5
    assert report.max_abs_diff == 0.0


def test_a_drift_mid_extract_keeps_nothing_of_the_run(cli, tmp_path, registered, monkeypatch):
    _auto_tries(monkeypatch, "latedrift")
    data = make_folder_dataset(tmp_path / "data", per_class=8)
    cache = tmp_path / "cache"
    args = ("extract", data, "--backbone", "tiny_cnn", "--workers", "0", "--batch-size", "2", "--cache-dir", cache)
    result = cli(*args, "--engine", "auto", "--quiet", env={"TLX_FLUSH_ROWS": "1"})  # a part per batch
    assert result.exit_code == 2 and "engine latedrift gave features" in result.stderr, result.stderr
    assert h5_files(cache) == [] and not list(cache.glob("*.parts/*.h5"))
    # A later eager run computes every vector itself: nothing of the drifting engine is taken back.
    again = cli(*args, "--engine", "eager", "--json").json()
    assert again["n_new"] == 16 and again["n_resumed"] == 0, again


def test_the_cache_records_the_engine_that_made_its_vectors(cli, tmp_path, registered, monkeypatch):
    _auto_tries(monkeypatch, "exact")
    data = make_folder_dataset(tmp_path / "data", per_class=3)
    cache = tmp_path / "cache"
    base = ("extract", data, "--backbone", "tiny_cnn", "--workers", "0", "--cache-dir", cache, "--json")
    first = cli(*base, "--engine", "auto").json()
    write_image(data / "ants" / "new.png", seed=90)
    second = cli(*base, "--engine", "eager").json()
    assert first["n_new"] == 6 and second["n_new"] == 1, (first, second)
    with h5py.File(second["path"]) as f:
        records = json.loads(f.attrs["engines"])
    assert [(r["engine"], r["n_vectors"]) for r in records] == [("exact", 6), ("eager", 1)], records
    assert records[0]["checks"] == 1 and records[0]["max_abs_diff"] == 0.0
    assert np.isfinite(records[0]["tolerance"])
