"""The cache's modules import one another one way, and view parts are parts: written, merged
and taken back by the same code as feature parts, with only their key columns different."""

from __future__ import annotations

import ast
import json

import h5py
import numpy as np
import pytest
from conftest import REPO
from synthetic_cache import SPACE, WIDTH, sha

from tlx.cache import parts, views
from tlx.cache.index import CacheIndex, orphan_parts

RECIPE = {"name": "light", "seed": 0}


def _imports_within(package: str) -> dict[str, set[str]]:
    """module -> the modules of ``package`` it imports relatively, lazy imports in functions too."""
    graph: dict[str, set[str]] = {}
    for path in sorted((REPO / package).glob("*.py")):
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module} if node.module else {a.name for a in node.names}
        graph[path.stem] = {m.split(".")[0] for m in found}
    return graph


def _circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph``, or None (depth-first search for a back edge)."""
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        trail.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*trail[trail.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        trail.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_circle_finder_finds_a_circle():
    assert _circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _circle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_cache_modules_import_one_another_one_way():
    graph = _imports_within("cache")
    assert {"parts", "index", "views", "reader", "verify"} <= set(graph)
    assert _circle(graph) is None, f"import circle in cache/: {' -> '.join(_circle(graph) or [])}"


def test_the_low_modules_know_nothing_of_the_ones_built_on_them():
    graph = _imports_within("cache")
    assert graph["h5format"] <= {"space"}  # the bottom: format helpers only
    assert "views" not in graph["index"] and "reader" not in graph["views"]


def _vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, WIDTH)).astype(np.float32)


def test_a_view_writer_is_the_part_writer_and_leaves_one_part(tmp_path):
    keys = [(sha(f"img{k}"), v) for k in range(3) for v in (1, 2)]
    X = _vectors(len(keys))
    writer = views.ViewWriter(tmp_path, "views-run-r000", SPACE, RECIPE, flush_rows=2, flush_seconds=1e9)
    assert isinstance(writer, parts.PartWriter)
    for start in range(0, len(keys), 2):
        writer.add(keys[start : start + 2], X[start : start + 2])
    assert len(writer.segments) == 3
    [(name, written)] = writer.close()  # merged like feature parts: one part per run and rank
    assert name == "views-run-r000.h5" and written == keys
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]
    with h5py.File(tmp_path / name, "r") as f:
        assert f.attrs["tlx_view_part"] == 1 and json.loads(f.attrs["view_recipe"]) == RECIPE
        assert all(f[d].fletcher32 for d in ("features", "content_sha256", "view"))
        np.testing.assert_array_equal(f["features"][()], X)
        assert f["view"][()].tolist() == [v for _, v in keys]


def test_view_parts_of_an_unfinished_run_are_taken_back_and_other_recipes_dropped(tmp_path):
    cache = tmp_path / "c.h5"
    folder = views.views_dir(cache)
    folder.mkdir()
    keys = [(sha("a"), 1), (sha("a"), 2), (sha("b"), 1)]
    parts.write_part(folder, "views-1.h5", keys, _vectors(3), SPACE, parts.VIEW_PARTS, {"view_recipe": RECIPE})
    other = {**RECIPE, "seed": 1}
    parts.write_part(folder, "views-2.h5", keys, _vectors(3, 1), SPACE, parts.VIEW_PARTS, {"view_recipe": other})
    src = views.view_sources(cache, None, SPACE, RECIPE)
    assert src.resumed == {key: ("views-1.h5", row) for row, key in enumerate(keys)}
    assert sorted(p.name for p in folder.iterdir()) == ["views-1.h5"]  # another recipe's vectors never mix in


@pytest.mark.parametrize("kind", [parts.FEATURE_PARTS, parts.VIEW_PARTS])
def test_both_kinds_of_part_read_back_their_keys(tmp_path, kind):
    hashes = [sha(f"x{k}") for k in range(5)]
    keys = hashes if kind is parts.FEATURE_PARTS else [(h, k % 3 + 1) for k, h in enumerate(hashes)]
    parts.write_part(tmp_path, "p.h5", keys, _vectors(5), SPACE, kind)
    assert parts.read_part_keys(tmp_path / "p.h5", SPACE, kind) == keys


def test_orphan_feature_parts_skip_the_ones_the_index_uses(tmp_path):
    cache = tmp_path / "c.h5"
    folder = parts.parts_dir(cache)
    folder.mkdir()
    parts.write_part(folder, "used.h5", [sha("a")], _vectors(1), SPACE)
    parts.write_part(folder, "left.h5", [sha("b"), sha("c")], _vectors(2), SPACE)
    (folder / ".half.h5.tmp").write_bytes(b"x")
    index = CacheIndex(cache, SPACE, [], [], np.zeros(0), [], [], {}, {}, part_names=["used.h5"])
    assert orphan_parts(cache, index, SPACE) == {sha("b"): ("left.h5", 0), sha("c"): ("left.h5", 1)}
    assert sorted(p.name for p in folder.iterdir()) == ["left.h5", "used.h5"]
