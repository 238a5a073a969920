"""Payloads left on disk while an alignment holds only what its verdict reads (tsalign.traces.spill), and the
fan-out that hands the outputs' blocks to every writer (tsalign.align.fanout). Pure: no kernel needed."""

from __future__ import annotations

import tempfile
import threading
import time

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tsalign.align.fanout import Cancelled, Fanout
from tsalign.traces.events import EventsBuilder
from tsalign.traces.spill import PayloadPolicy, PayloadSpill


def test_spill_gives_rows_back_in_the_order_asked_across_batches(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the spill's directory ($TMPDIR)
    s = PayloadSpill()
    chunks = [[f"r{i}" for i in range(lo, hi)] for lo, hi in ((0, 3), (3, 4), (4, 10))]
    for c in chunks:
        s.add(pa.array(c, pa.string()))
    s.add(pa.array([], pa.string()))  # an empty chunk adds no batch
    assert len(s) == 10
    assert not list(tmp_path.iterdir())  # unlinked from the start: nothing left behind, even by a killed process
    rows = np.asarray([9, 0, 3, 3, 5, 2])
    assert s.take(rows).to_pylist() == [f"r{i}" for i in rows.tolist()]
    assert s.take(np.asarray([4, 5])).to_pylist() == ["r4", "r5"]  # one batch
    assert s.take(np.zeros(0, dtype=np.int64)).to_pylist() == []
    assert s.take(np.asarray([0])).to_pylist() == ["r0"]  # a batch let go is read again
    with pytest.raises(IndexError, match=r"rows 3\.\.10 asked of 10"):
        s.take(np.asarray([3, 10]))
    with pytest.raises(RuntimeError, match="added after"):
        s.add(pa.array(["late"], pa.string()))


def test_policy_keeps_named_prefixed_and_marked_payloads_and_parses_fields() -> None:
    def parse(text):  # the number after "v=" (the field), matched where there is one
        vals = [int(p.split("v=")[1]) if "v=" in p else None for p in text.to_pylist()]
        return (np.asarray([v or 0 for v in vals], dtype=np.uint64), np.zeros(len(vals), dtype=np.uint64),
                np.asarray([v is not None for v in vals]))

    pol = PayloadPolicy(frozenset({"keep_me"}), ("(",), ("MARK",), {"parse_me": parse})
    b = EventsBuilder(pol)
    names = ["sys:keep_me", "other", "parse_me", "other", "other", "parse_me"]
    payloads = ["kept text", "dropped", "v=7", "(probe+0x0/0x10) x=1", "has MARK inside", "no field"]
    n = len(names)
    z = np.zeros(n, dtype=np.int64)
    b.add_codes(np.arange(n, dtype=np.uint64), z, z, None, b.comm_codes(["c"] * n), b.name_codes(names), payloads)
    ev = b.build()
    assert ev.payload.tolist() == ["kept text", None, None, "(probe+0x0/0x10) x=1", "has MARK inside", None]
    assert ev.parsed == frozenset({"parse_me"})
    f0, _, ok = ev.fields
    assert f0.tolist() == [0, 0, 7, 0, 0, 0] and ok.tolist() == [False, False, True, False, False, False]
    assert ev.spill.take(np.arange(n)).to_pylist() == payloads  # every payload, in row order
    sub = ev.take(np.asarray([5, 2]))  # rows keep their place in the spill and their fields
    assert sub.spill_rows().tolist() == [5, 2] and sub.fields[0].tolist() == [0, 7]
    # without a policy: every payload held, no spill, no fields
    plain = EventsBuilder()
    plain.add_codes(np.arange(n, dtype=np.uint64), z, z, None, plain.comm_codes(["c"] * n), plain.name_codes(names),
                    payloads)
    ev2 = plain.build()
    assert ev2.payload.tolist() == payloads and ev2.spill is None and ev2.fields is None and ev2.spill_rows() is None


def test_fanout_hands_every_block_to_every_reader_in_order() -> None:
    fan = Fanout(iter(range(50)), 3, depth=2).start()
    got: list[list[int]] = [[], [], []]
    threads = [threading.Thread(target=lambda k=k: got[k].extend(fan.reader(k))) for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    fan.stop()
    assert got == [list(range(50))] * 3


def test_fanout_a_failing_writer_stops_the_others_and_a_source_error_reaches_all() -> None:
    fan = Fanout(iter(range(1000)), 2, depth=1).start()

    def fails(blocks):
        next(blocks)
        raise OSError(28, "No space left on device")

    errors: list[BaseException] = []

    def other() -> None:
        try:
            fan.feed(1, lambda blocks: sum(1 for _ in blocks))
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t0 = time.monotonic()
    with pytest.raises(OSError, match="No space"):
        fan.feed(0, fails)
    t.join(30)
    fan.stop()
    assert not t.is_alive() and time.monotonic() - t0 < 30  # no writer waits for a reader that gave up
    assert len(errors) == 1 and isinstance(errors[0], Cancelled)

    def source():
        yield 1
        raise ValueError("a block could not be made")

    fan = Fanout(source(), 2).start()
    for k in range(2):
        blocks = fan.reader(k)
        assert next(blocks) == 1
        with pytest.raises(ValueError, match="could not be made"):
            next(blocks)
    fan.stop()


def test_a_spill_that_cannot_be_written_names_its_directory(tmp_path, monkeypatch) -> None:
    """No TMPDIR, or a full one (/dev/full stands for it): exit 4 (unavailable) naming the directory and the fix,
    not a traceback of the IPC writer."""
    from tsalign.errors import Unavailable

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))
    with pytest.raises(Unavailable, match=r"spill in .*gone cannot be written .*set TMPDIR"):
        PayloadSpill()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    s = PayloadSpill()
    s._file.close()
    s._file = open("/dev/full", "wb")  # noqa: SIM115 - every write: ENOSPC
    with pytest.raises(Unavailable, match="No space left on device"):
        s.add(pa.array(["x" * 100_000] * 50, pa.string()))


_COMM = st.text(st.sampled_from(list("ab /:=-0é")), max_size=8)
_PID = st.integers(-(10**12), 10**12)


@given(st.lists(st.one_of(
    st.builds(lambda pc, pp, ps, nc, np_: f"prev_comm={pc} prev_pid={pp} prev_prio=120 prev_state={ps} ==> "
              f"next_comm={nc} next_pid={np_} next_prio=-1", _COMM, _PID, st.sampled_from(["R", "S|D", "R+", ""]),
              _COMM, _PID),
    st.text(st.sampled_from(list("pidrevnxt_=> 0129")), max_size=40)), max_size=30))
@settings(max_examples=200, deadline=None)
def test_sched_switch_fields_in_one_regex_pass_match_the_row_parser(payloads: list[str]) -> None:
    """The evidence's sched_switch parser (pyarrow's regex kernel over the column) gives the pids the row parser
    (:func:`tsalign.traces.payloads.sched_switch`, used by the analyses) reads, wherever those fit in 10 digits."""
    from tsalign.traces.payloads import sched_switch
    from tsalign.verify.evidence import FIELDS

    prev, nxt, ok = FIELDS["host"]["sched_switch"](pa.array(payloads, pa.string()))
    for p, a, b, o in zip(payloads, prev.view(np.int64).tolist(), nxt.view(np.int64).tolist(), ok.tolist()):
        r = sched_switch(p)
        fits = r is not None and max(abs(r["prev_pid"]), abs(r["next_pid"])) < 10**10
        assert (a, b, o) == ((r["prev_pid"], r["next_pid"], True) if fits and r else (0, 0, False)), p


@given(st.lists(st.text(st.sampled_from(list("pid=x 0123456789é_")), max_size=30), max_size=30))
@settings(max_examples=200, deadline=None)
def test_sched_waking_pid_in_one_regex_pass_is_the_payloads_last_pid(payloads: list[str]) -> None:
    """The woken pid is the digits after the payload's last ``pid=`` that starts a word (-1: none, or beyond 18
    digits), as ``re.findall(r"\\bpid=(\\d+)")[-1]`` reads it on ASCII text."""
    import re

    from tsalign.verify.evidence import FIELDS

    pids, _, ok = FIELDS["host"]["sched_waking"](pa.array(payloads, pa.string()))
    assert ok.all()
    for p, got in zip(payloads, pids.view(np.int64).tolist()):
        found = re.findall(r"\bpid=(\d+)", p, re.ASCII)
        want = int(found[-1]) if found and len(found[-1]) <= 18 else -1
        assert got == want, p


def test_sched_waking_pid_too_long_is_none_not_an_earlier_one() -> None:
    from tsalign.verify.evidence import FIELDS

    pids, _, _ = FIELDS["host"]["sched_waking"](pa.array(["pid=1 pid=" + "9" * 19, "comm=a pid=2x", "pid=7"]))
    assert pids.view(np.int64).tolist() == [-1, 2, 7]
