"""Routes in the kernel: every node's shortest-delay routes, aggregated, sent by netlink.

Each node is an IP router for the others' service addresses. The router
(:class:`netemu.routes.routing.ShortestDelayRouter`, passed in) recomputes the
trees an update's link changes touch, :class:`netemu.routes.aggregation.PrefixRoutes`
turns each node's next hops into few prefixes, :func:`route_messages` encodes what
changed as netlink messages per node (pure), and :meth:`Routes.update` sends them,
one batch per node, through the run's one socket per namespace. A large update (a
handover between shells at Starlink phase 1 changes ~0.5 million prefixes: ~0.5 s
of the kernel's time) is sent by :class:`Installer` in a thread of its own while
the next epochs are computed and applied (the kernel's work does not hold Python's
lock); later updates queue behind it (each namespace's batches in order, the ends
of links gone first), the routes in the kernel lag the table by at most
:data:`BACKLOG_PREFIXES`, and each update is in force when the history (and
:attr:`Routes.in_force_ms`) says so.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from netemu import native
from netemu.kernel.netlink.route import encode_deletes, encode_replaces, encode_unreachables
from netemu.kernel.netlink.sockets import NamespaceSockets, send_all
from netemu.routes import addressing, aggregation, composition
from netemu.routes.aggregation import PrefixChanges, PrefixRoutes
from netemu.routes.routing import (
    UNREACHABLE,
    WORK_PER_SECOND,
    RouteChanges,
    RouteHistory,
    ShortestDelayRouter,
)


def route_messages(changes: PrefixChanges) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(node, its netlink message arrays) for the prefix ``changes``: a route through
    the nexthop object toward the neighbour (its service address on the link toward
    it, made at bring-up), sourced from the node's own service address, or
    ``unreachable``, or a deletion. All encoded at once, then split by node."""
    node, dst, dst_len, via = changes.replace
    reach = via != UNREACHABLE
    s, v = node[reach], via[reach]
    batches = [
        (
            s,
            encode_replaces(
                dst[reach],
                addressing.nexthop_id(v),
                addressing.service_address_u32(s),
                dst_len[reach],
            ),
        ),
        (node[~reach], encode_unreachables(dst[~reach], dst_len[~reach])),
        (changes.delete[0], encode_deletes(changes.delete[1], changes.delete[2])),
    ]
    for one in np.union1d(node, changes.delete[0]).tolist():
        mine = []
        for owner, msgs in batches:  # each sorted by node
            lo, hi = np.searchsorted(owner, [one, one + 1])
            mine.append(msgs[lo:hi])
        yield one, mine


#: Prefix changes above which an update is sent in the background (~20 ms of the
#: kernel's work here): smaller ones are in force when :meth:`Routes.update` returns,
#: unless a larger one is still being sent (then they queue behind it, in order).
BACKGROUND_PREFIXES = 20_000
#: Prefix changes that may wait to be sent before an update waits for room: the routes
#: in the kernel lag the table by at most that. Starlink phase 1's handovers come in
#: bursts of 0.3-0.7 million prefixes an epoch for seconds on end, which the kernel
#: takes at ~0.6 million a second here while the controller computes (measured): 2.5
#: million (~4 s of it) rides a burst out instead of making its epochs late. The nodes
#: a gone link leaves routing into nothing skip the queue (:meth:`Installer.start`).
BACKLOG_PREFIXES = 2_500_000
#: Prefix changes waiting above which the installer's thread also runs on the CPUs an
#: epoch's computation keeps off (the wire engine's), until fewer than a quarter of it
#: wait. The thread otherwise yields to the computation (nice 19) on the CPU they share:
#: sharing it as equals, a burst of handovers at Starlink phase 1 made epochs late (4 of
#: 601, one run); on the engine's CPU all the time, the engine's releases suffered in a
#: burst (76-78% of probe packets within 0.5 ms instead of 83-89%, one run each, whatever
#: the size of its system calls).
SPREAD_PREFIXES = 500_000
#: The installer thread's niceness: the next epochs' computation comes first.
INSTALLER_NICE = 19


@dataclass
class _Update:
    """One update in the installer's queue: the namespaces' batches not yet sent."""

    batches: dict[str, list[np.ndarray]]
    prefixes: int
    done: Callable[[], None]
    sending: int = 0  # batches taken, not yet in the kernel


class Installer:
    """Sends updates' route messages in a thread of its own, through sockets of its
    own (never interleaved with the run's other netlink requests), while the
    controller goes on with the next epochs.

    Each namespace's routing table is its own, so only a namespace's batches need to
    go in the order of their updates: the oldest update is sent first, except that a
    namespace flagged *urgent* (an end of a link gone: its routes through that link
    drop packets until replaced) has its queued batches sent before anything else.
    Updates are in force (``done``) in their order, once theirs and every earlier
    update's batches are all in the kernel.

    The thread runs where its creator could (an epoch's computation, which keeps off
    the shaper's CPU: :meth:`.Shaper.elsewhere`), and on every CPU the process was
    given when the installer was made while more than :data:`SPREAD_PREFIXES` wait;
    where it shares a CPU with the computation, the computation comes first."""

    def __init__(self, backlog_prefixes: int = BACKLOG_PREFIXES) -> None:
        self.sockets = NamespaceSockets()
        self._cpus = os.sched_getaffinity(0)
        self.backlog_prefixes = backlog_prefixes
        self._queue: collections.deque[_Update] = collections.deque()
        self._urgent: dict[str, None] = {}  # namespaces to send first, in order flagged
        self._pending = 0  # prefixes queued or being sent
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stopping = False
        #: Updates in force so far; the most prefix changes that waited at once.
        self.sent = 0
        self.most_pending = 0

    def busy(self) -> bool:
        """Whether an update is queued or being sent (a smaller one must queue behind)."""
        with self._changed:
            return self._pending > 0

    def start(
        self,
        batches: list[tuple[str, list[np.ndarray]]],
        prefixes: int,
        done: Callable[[], None],
        urgent: Sequence[str] = (),
    ) -> None:
        """Send ``batches`` ((namespace, messages) each; ``prefixes`` changes in all)
        after those queued, the namespaces in ``urgent`` first, then call ``done``.
        Waits while the backlog is full; raises what failed in sending an earlier update."""
        with self._changed:
            self._changed.wait_for(
                lambda: (
                    self._error is not None
                    or not self._pending
                    or self._pending + prefixes <= self.backlog_prefixes
                )
            )
            self._raise()
            mine = dict(batches)
            self._queue.append(_Update(mine, prefixes, done))
            self._urgent.update((netns, None) for netns in urgent if netns in mine)
            self._pending += prefixes + 1  # + 1: an empty update still queues
            self.most_pending = max(self.most_pending, self._pending - len(self._queue))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._send, name="netemu-routes", daemon=True
                )
                self._thread.start()
            self._changed.notify_all()

    def _take(self) -> tuple[_Update, str, list[np.ndarray]] | None:
        """The next batch to send (the lock held): an urgent namespace's oldest, else
        the oldest update's next. A namespace's batches go in their updates' order."""
        while self._urgent:
            netns = next(iter(self._urgent))
            for update in self._queue:
                if netns in update.batches:
                    update.sending += 1
                    return update, netns, update.batches.pop(netns)
            del self._urgent[netns]  # all its batches are sent
        for update in self._queue:
            if update.batches:
                netns = next(iter(update.batches))
                update.sending += 1
                return update, netns, update.batches.pop(netns)
        return None

    def _in_force(self) -> list[_Update]:
        """Remove and return the leading updates that are all in the kernel (lock held)."""
        out = []
        while self._queue and not self._queue[0].batches and not self._queue[0].sending:
            out.append(self._queue.popleft())
        return out

    def _send(self) -> None:
        near = os.sched_getaffinity(0)  # inherited from the epoch that started it
        with contextlib.suppress(OSError):  # this thread only (Linux: a thread's own id)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INSTALLER_NICE)
        spread = False
        while True:
            if spread != (self._pending > (SPREAD_PREFIXES // 4 if spread else SPREAD_PREFIXES)):
                spread = not spread
                os.sched_setaffinity(0, self._cpus if spread else near)  # this thread only
            with self._changed:
                self._changed.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                taken = self._take()
            try:
                if taken is not None:
                    update, netns, messages = taken
                    send_all(self.sockets(netns), messages)
                    # A batch is a view of its update's whole encoded array (~0.1 GB at
                    # phase 1's bring-up): not kept alive while this thread waits.
                    messages = None
                with self._changed:
                    if taken is not None:
                        update.sending -= 1
                    taken = None
                    finished = self._in_force()
                for update in finished:
                    self.sent += 1
                    update.done()
            except BaseException as exc:  # raised by the next start() or wait(): fails closed
                with self._changed:
                    self._error = exc
                    self._queue.clear()
                    self._urgent.clear()
                    self._pending = 0
                    self._changed.notify_all()
                return
            with self._changed:
                self._pending -= sum(u.prefixes + 1 for u in finished)
                self._changed.notify_all()

    def check(self) -> None:
        """Raise what failed in sending an earlier update, if anything did."""
        with self._changed:
            self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def wait(self) -> None:
        """Until every queued update is in force; raises what failed in sending one."""
        with self._changed:
            self._changed.wait_for(lambda: not self._pending or self._error is not None)
            self._raise()

    def close(self) -> None:
        """Stop sending (the run is being removed) and close the sockets."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.sockets.close()


#: The routes' compiled loops: (source, name, flags, loader) each.
KERNELS = [
    (composition.SOURCE, composition.NAME, composition.FLAGS, composition.compose_kernel),
    (aggregation.SOURCE, aggregation.NAME, aggregation.FLAGS, aggregation.ortc_kernel),
]


def build_kernels() -> None:
    """Build the routes' compiled loops that are not yet (NumPy does their work where
    they cannot be built: the same routes, slower)."""
    for source, name, flags, kernel in KERNELS:
        if kernel() is None:
            with contextlib.suppress(native.BuildError, OSError):  # no compiler, no cache
                native.built(source, name, flags)
            kernel.cache_clear()


class Routes:
    def __init__(
        self,
        namespaces: list[str],
        sockets: NamespaceSockets,
        router: ShortestDelayRouter | None = None,
        keep_history: bool = False,
        step_s: float = 1.0,
        hubs: Sequence[int] = (),
    ):
        """``step_s``: the wall-clock seconds between epochs, which the default router's
        refresh budget follows (:data:`~netemu.routes.routing.WORK_PER_SECOND`);
        ``hubs``: the nodes that are not satellites, which join the shells."""
        self.namespaces = namespaces
        self.sockets = sockets
        self.router = router or ShortestDelayRouter(
            len(namespaces), work_per_update=round(WORK_PER_SECOND * step_s), hubs=hubs
        )
        self.prefixes = PrefixRoutes(len(namespaces))
        self.installer = Installer()
        self._links = np.zeros(0, np.int64)  # a * n + b of the links carrying at the last update
        #: Updates with at least this many prefix changes are sent in the background.
        self.background_prefixes = BACKGROUND_PREFIXES
        #: Per update, milliseconds from its start until its routes were all in the kernel.
        self.in_force_ms: list[float] = []
        #: With keep_history: (unix time, {link: delay_ms} carrying, next hops) per update.
        self.history: RouteHistory | None = RouteHistory() if keep_history else None

    def update(
        self, a: np.ndarray, b: np.ndarray, delay_ms: np.ndarray, refresh: bool, began_s: float
    ) -> tuple[RouteChanges, PrefixChanges]:
        """Links a-b carry with one-way ``delay_ms``: bring the kernel's routes up to
        date (``refresh``: a new epoch; ``began_s``: unix time the update began)."""
        self.installer.check()  # a failed send fails the run at once
        urgent = self._ends_of_links_gone(a, b)
        changes = self.router.update(a, b, delay_ms, refresh)
        prefixes = self.prefixes.update(self.router.hops, changes.node, a, b, changes.dest)
        batches = [(self.namespaces[node], m) for node, m in route_messages(prefixes)]
        entry = None
        if self.history is not None:
            keys = zip(a.tolist(), b.tolist(), strict=True)
            carrying = dict(zip(keys, delay_ms.tolist(), strict=True))
            # In force once sent: until then its time is in the future (infinity).
            entry = self.history.append(
                float("inf"), carrying, self.router.hops, changes, start_s=began_s
            )

        def done() -> None:
            now = time.time()
            self.in_force_ms.append((now - began_s) * 1000)
            if entry is not None:
                self.history.complete(entry, now)

        if len(prefixes) >= self.background_prefixes or self.installer.busy():
            self.installer.start(batches, len(prefixes), done, urgent)
        else:
            for netns, messages in batches:
                send_all(self.sockets(netns), messages)
            done()
        return changes, prefixes

    def _ends_of_links_gone(self, a: np.ndarray, b: np.ndarray) -> list[str]:
        """The namespaces at either end of a link that carried at the last update and
        no longer does: their routes through it drop packets until replaced."""
        n = len(self.namespaces)
        links = np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b)
        gone = np.setdiff1d(self._links, links)
        self._links = links
        ends = np.unique(np.concatenate(np.divmod(gone, n)))
        return [self.namespaces[i] for i in ends.tolist()]

    def settle(self) -> None:
        """Wait until every computed route is in the kernel (raises a sending error)."""
        self.installer.wait()

    def close(self) -> None:
        self.installer.close()


if __name__ == "__main__":  # scripts/provision: built ahead of the first run
    build_kernels()
    for source, _, _, kernel in KERNELS:
        if kernel() is None:
            raise SystemExit(f"netemu: {source.name} could not be built (is gcc installed?)")
