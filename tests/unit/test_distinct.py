"""distinct (the readers' distinct event types, codes and sources of each chunk, counted where they are small)
answers as np.unique does, for every integer dtype, negative and large values included (then np.unique itself)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tsalign.traces.table import _COUNTED, distinct

_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_DTYPES), st.data())
def test_distinct_is_np_unique(dtype: type, data: st.DataObject) -> None:
    info = np.iinfo(dtype)
    top = data.draw(st.sampled_from([10, _COUNTED - 1, _COUNTED, int(info.max)]))
    lo = data.draw(st.sampled_from([0, max(int(info.min), -5), int(info.min)]))
    values = np.asarray(data.draw(st.lists(st.integers(lo, min(top, int(info.max))), max_size=50)), dtype=dtype)
    got = distinct(values)
    want = np.unique(values)
    assert got.dtype == want.dtype and got.tolist() == want.tolist()
