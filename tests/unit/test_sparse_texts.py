"""SparseTexts (a payload column of mostly None) answers as the numpy object array it stands for: every indexing
the alignment uses is compared with numpy's own on the dense column, and a merge's placement with numpy's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsalign.traces.sparse import SparseTexts, as_dense, concatenated, placed, sparse_of


@st.composite
def columns(draw: st.DrawFn) -> np.ndarray:
    n = draw(st.integers(0, 40))
    texts = draw(st.lists(st.one_of(st.none(), st.text(max_size=5)), min_size=n, max_size=n))
    out = np.empty(n, dtype=object)
    out[:] = texts
    return out


@settings(max_examples=300, deadline=None)
@given(columns(), st.data())
def test_indexing_equals_numpy_on_the_dense_column(dense: np.ndarray, data: st.DataObject) -> None:
    s = sparse_of(dense)
    n = len(dense)
    assert len(s) == n and s.shape == (n,)
    assert s.tolist() == dense.tolist()
    assert np.array_equal(as_dense(s), dense) or n == 0
    if n:
        i = data.draw(st.integers(-n, n - 1))
        assert s[i] == dense[i]
    lo, hi = data.draw(st.integers(-n - 2, n + 2)), data.draw(st.integers(-n - 2, n + 2))
    step = data.draw(st.sampled_from([None, 1, 2, -1]))
    assert s[lo:hi:step].tolist() == dense[lo:hi:step].tolist()
    rows = np.asarray(data.draw(st.lists(st.integers(-n, n - 1), max_size=30)) if n else [], dtype=np.int64)
    got = s[rows]
    assert isinstance(got, SparseTexts) and got.tolist() == dense[rows].tolist()
    mask = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)
    assert s[mask].tolist() == dense[mask].tolist()
    # an index of an index, as the outputs' blocks take rows of a selection
    assert s[rows][: len(rows) // 2].tolist() == dense[rows][: len(rows) // 2].tolist()


def test_out_of_range_rows_raise_as_numpy_does() -> None:
    s = sparse_of(np.asarray(["a", None, "c"], dtype=object))
    for bad in (3, -4):
        with pytest.raises(IndexError):
            s[bad]
    with pytest.raises(IndexError):
        s[np.asarray([0, 3])]
    with pytest.raises(IndexError):
        s[np.asarray([True, False])]  # a mask of another length
    with pytest.raises(IndexError):
        s[np.asarray([0.5])]
    with pytest.raises(ValueError):
        SparseTexts(3, np.asarray([0, 1]), np.asarray(["a"], dtype=object))


@settings(max_examples=200, deadline=None)
@given(columns(), columns(), st.data())
def test_placed_puts_rows_where_the_merge_puts_them(a: np.ndarray, b: np.ndarray, data: st.DataObject) -> None:
    n = len(a) + len(b)
    perm = np.asarray(data.draw(st.permutations(range(n))), dtype=np.int64)
    # positions: part j's row i goes to perm[base_j + i]
    positions = [perm[:len(a)], perm[len(a):]]
    want = np.empty(n, dtype=object)
    want[positions[0]], want[positions[1]] = a, b
    both = [data.draw(st.sampled_from([sparse_of(x), x])) for x in (a, b)]  # sparse, or dense parts mixed in
    assert placed(both, n, positions=positions).tolist() == want.tolist()
    assert concatenated(both).tolist() == np.concatenate([a, b]).tolist()
    # order: the merged rows as indices into the parts concatenated (lexsort's answer)
    order = np.argsort(perm, kind="stable")
    assert placed(both, n, order=order).tolist() == np.concatenate([a, b])[order].tolist()
