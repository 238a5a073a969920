"""One stream of blocks, read by several writers at once, each in its own thread.

``tsalign align`` writes three outputs of the same rows (JSON lines, Parquet, Perfetto). The rows are made once,
a block at a time (payloads read back from a spill: :meth:`tsalign.align.columns.AlignedColumns.blocks`), and each
writer takes every block from its own queue of ``depth`` blocks: memory holds a few blocks, never the outputs'
rows. A writer that fails stops the others (they see :class:`Cancelled`); an error making the blocks reaches
every writer.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

__all__ = ["Blocks", "Cancelled", "Fanout"]

_POLL = 0.1  # seconds between looks at the stop flag while a queue is full or empty


class Cancelled(Exception):
    """The fan-out was stopped (another writer failed) before this writer had every block."""


class Fanout:
    """Blocks of ``source`` handed to ``n`` readers (:meth:`reader`), each block to every one; made in a thread of
    its own once :meth:`start` is called. :meth:`stop` (always, e.g. in ``finally``) ends it."""

    def __init__(self, source: Iterable[Any], n: int, depth: int = 2) -> None:
        self._source = source
        self._queues: list[queue.Queue[tuple[str, Any]]] = [queue.Queue(depth) for _ in range(n)]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tsalign-blocks", daemon=True)

    def start(self) -> Fanout:
        self._thread.start()
        return self

    def _put(self, q: queue.Queue[tuple[str, Any]], item: tuple[str, Any]) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        end: tuple[str, Any] = ("end", None)
        try:
            for block in self._source:
                for q in self._queues:
                    if not self._put(q, ("block", block)):
                        return
        except BaseException as e:  # noqa: BLE001 - handed to every reader, which raises it
            end = ("error", e)
        for q in self._queues:
            self._put(q, end)

    def reader(self, k: int) -> Iterator[Any]:
        """Reader ``k``'s blocks, in order; raises the error that ended the source, or :class:`Cancelled`."""
        q = self._queues[k]
        while True:
            try:
                kind, value = q.get(timeout=_POLL)
            except queue.Empty:
                if self._stop.is_set():
                    raise Cancelled("stopped: another output failed") from None
                continue
            if kind == "block":
                yield value
            elif kind == "end":
                return
            else:
                raise value

    def feed(self, k: int, write: Callable[[Iterator[Any]], Any]) -> Any:
        """``write(reader k)``; when it fails, the others are stopped (else the blocks they wait for would wait
        for this reader's full queue)."""
        try:
            return write(self.reader(k))
        except BaseException:
            self._stop.set()
            raise

    def stop(self) -> None:
        """Stop making blocks and wait for the thread (readers still waiting raise :class:`Cancelled`)."""
        self._stop.set()
        self._thread.join()


class Blocks:
    """A reader's blocks in the shape the writers take (``blocks(chunk)``, ``record_batches(schema, chunk)``, as
    :class:`~tsalign.align.columns.AlignedColumns` offers them): the blocks come as they were made, whatever
    ``chunk`` says."""

    def __init__(self, blocks: Iterator[Any]) -> None:
        self._blocks = blocks

    def blocks(self, chunk: int = 0) -> Iterator[Any]:
        return self._blocks

    def record_batches(self, schema: Any, chunk: int = 0) -> Iterator[Any]:
        from .columns import record_batches

        return record_batches(self._blocks, schema)
