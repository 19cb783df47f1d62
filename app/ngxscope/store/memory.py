"""Bounded in-memory window of exchanges: what the live window shows.

`ExchangeStore` keeps the newest `capacity` exchanges in arrival order. When a batch
overflows it, the oldest ones are dropped as one block from the front (the count of
dropped exchanges is kept, so a view can map its rows: a row index is an index into
the store, and a drop shifts every index down by the block size).

Pure Python, no Qt: the UI's table model wraps it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ngxscope.model import Exchange

__all__ = ["ExchangeStore"]


class ExchangeStore:
    """The newest `capacity` exchanges, oldest first, with a per-connection index."""

    def __init__(self, capacity: int = 200_000) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        # A list with a moving head: O(1) index access (a deque is O(n) in the middle),
        # dropped items compacted away once the dead prefix is large.
        self._items: list[Exchange] = []
        self._head = 0
        self._by_conn: dict[str, list[Exchange]] = {}
        self.dropped = 0
        """How many exchanges were dropped from the front since creation (or `clear`)."""
        self.total = 0
        """How many exchanges were appended since creation (or `clear`)."""

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __getitem__(self, index: int) -> Exchange:
        n = len(self._items) - self._head
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError("ExchangeStore index out of range")
        return self._items[self._head + index]

    def __iter__(self) -> Iterator[Exchange]:
        items = self._items
        for i in range(self._head, len(items)):
            yield items[i]

    def append_batch(self, batch: Iterable[Exchange]) -> int:
        """Append exchanges; drop the oldest beyond capacity. Returns how many were dropped."""
        items = self._items
        by_conn = self._by_conn
        n = 0
        for ex in batch:
            items.append(ex)
            n += 1
            if ex.conn_id:
                lst = by_conn.get(ex.conn_id)
                if lst is None:
                    by_conn[ex.conn_id] = [ex]
                else:
                    lst.append(ex)
        self.total += n
        overflow = len(items) - self._head - self.capacity
        if overflow <= 0:
            return 0
        self.drop_oldest(overflow)
        return overflow

    def drop_oldest(self, count: int) -> int:
        """Drop the `count` oldest exchanges (fewer if there are fewer). Returns how many."""
        items = self._items
        by_conn = self._by_conn
        head = self._head
        count = max(0, min(count, len(items) - head))
        for i in range(head, head + count):
            old = items[i]
            if old.conn_id:
                lst = by_conn.get(old.conn_id)
                if lst is not None:
                    # The oldest exchange of a connection is at the front of its list.
                    if lst and lst[0] is old:
                        del lst[0]
                    else:
                        try:
                            lst.remove(old)
                        except ValueError:
                            pass
                    if not lst:
                        del by_conn[old.conn_id]
        self._head = head + count
        if self._head > 4096 and self._head * 2 > len(items):
            del items[: self._head]
            self._head = 0
        self.dropped += count
        return count

    def would_drop(self, incoming: int) -> int:
        """How many exchanges `append_batch` of `incoming` more would drop (for views)."""
        return max(0, len(self) + incoming - self.capacity)

    def by_conn(self, conn_id: str) -> list[Exchange]:
        """Exchanges still in the window that travelled on connection `conn_id`, in order."""
        return list(self._by_conn.get(conn_id, ()))

    def clear(self) -> None:
        """Forget everything (counters too)."""
        self._items.clear()
        self._head = 0
        self._by_conn.clear()
        self.dropped = 0
        self.total = 0

    def snapshot(self) -> list[Exchange]:
        """A list copy of the window, oldest first."""
        return self._items[self._head :]
