"""The server's memory budget: what every request's decoding and inference may hold at once, process-wide.

A request reserves what its image needs (estimated from the header: the decoded image, its RGB copy and the
tensor at the working size, `io.decode_bytes`) before anything is decoded, and gives the decoding part back once
its image is preprocessed; the rest (the working-size tensor, the full-size label map) is held until the answer
is sent. At most `slots` requests decode at once. A request that cannot get its share within `wait_s` is refused
(503 with Retry-After: the server is busy, not broken); one that needs more than the whole budget is refused at
once (413). So memory is bounded by the budget, not by how many clients send large images at the same time.
"""
from __future__ import annotations

import asyncio
import contextlib
import time


class BudgetTooSmall(ValueError):
    """One request needs more than the whole budget."""


class BudgetBusy(RuntimeError):
    """The budget did not free enough within the wait."""


class MemoryBudget:
    """Bytes and decode slots shared by the requests of one event loop. Reservations wait on the loop; giving
    back is synchronous (it must work in a `finally` of a cancelled request, where an await may be cancelled)."""

    def __init__(self, total_bytes: int, slots: int):
        self.total, self.slots = int(total_bytes), max(1, int(slots))
        self.used = 0
        self.decoding = 0
        self._waiters: list[asyncio.Future] = []

    def _fits(self, nbytes: int) -> bool:
        return self.used + nbytes <= self.total and self.decoding < self.slots

    @contextlib.asynccontextmanager
    async def reserve(self, nbytes: int, wait_s: float):
        """Hold `nbytes` and a decode slot; yields a `Hold` whose `decoded(keep)` returns the slot and all but
        `keep` bytes. Everything is returned when the block ends, whatever happened inside it."""
        nbytes = int(nbytes)
        if nbytes > self.total:
            raise BudgetTooSmall(f"decoding it needs about {nbytes / 2**20:,.0f} MB, over the server's memory budget "
                                 f"of {self.total / 2**20:,.0f} MB (--memory-mb); send a smaller image")
        deadline = time.monotonic() + wait_s
        loop = asyncio.get_running_loop()
        while not self._fits(nbytes):
            left = deadline - time.monotonic()
            if left <= 0:
                raise BudgetBusy(f"the server is decoding as many images as its memory budget allows "
                                 f"({self.total / 2**20:,.0f} MB); retry shortly")
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, left)
            except asyncio.TimeoutError:
                pass
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.used += nbytes
        self.decoding += 1
        hold = Hold(self, nbytes)
        try:
            yield hold
        finally:
            hold.release()

    def _give_back(self, nbytes: int, slot: bool) -> None:
        self.used -= nbytes
        self.decoding -= int(slot)
        for w in self._waiters:  # every waiter looks again: a small request may fit where a large one does not
            if not w.done():
                w.set_result(None)


class Hold:
    """One request's share of a MemoryBudget."""

    def __init__(self, budget: MemoryBudget, nbytes: int):
        self.budget, self.nbytes, self.slot = budget, nbytes, True

    def decoded(self, keep: int) -> None:
        """The image is decoded and preprocessed: keep `keep` bytes (what the answer still needs), free the rest
        and the decode slot."""
        keep = min(int(keep), self.nbytes)
        self.budget._give_back(self.nbytes - keep, self.slot)
        self.nbytes, self.slot = keep, False

    def release(self) -> None:
        if self.nbytes or self.slot:
            self.budget._give_back(self.nbytes, self.slot)
            self.nbytes, self.slot = 0, False
