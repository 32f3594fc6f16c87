"""Routes in the kernel: every node's shortest-delay routes, aggregated, sent by netlink.

Each node is an IP router for the others' service addresses. The router
(:class:`netemu.routes.routing.ShortestDelayRouter`, passed in) recomputes the
trees an update's link changes touch, :class:`netemu.routes.aggregation.PrefixRoutes`
turns each node's next hops into few prefixes, :func:`route_messages` encodes what
changed as netlink messages per node (pure), and :meth:`Routes.update` sends them,
one batch per node, through the run's one socket per namespace.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import numpy as np

from netemu.kernel.netlink.route import encode_deletes, encode_replaces, encode_unreachables
from netemu.kernel.netlink.sockets import NamespaceSockets, send_all
from netemu.routes import addressing
from netemu.routes.aggregation import PrefixChanges, PrefixRoutes
from netemu.routes.routing import (
    UNREACHABLE,
    WORK_PER_SECOND,
    RouteChanges,
    RouteHistory,
    ShortestDelayRouter,
)


def route_messages(changes: PrefixChanges) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(node, its netlink message arrays) for the prefix ``changes``: a route via the
    neighbour's service address on the link toward it (onlink), sourced from the
    node's own service address, or ``unreachable``, or a deletion. All encoded at
    once, then split by node."""
    node, dst, dst_len, via = changes.replace
    reach = via != UNREACHABLE
    s, v = node[reach], via[reach]
    batches = [
        (
            s,
            encode_replaces(
                dst[reach],
                addressing.service_address_u32(v),
                addressing.interface_index(v),
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
        #: With keep_history: (unix time, {link: delay_ms} carrying, next hops) per update.
        self.history: RouteHistory | None = RouteHistory() if keep_history else None

    def update(
        self, a: np.ndarray, b: np.ndarray, delay_ms: np.ndarray, refresh: bool, began_s: float
    ) -> tuple[RouteChanges, PrefixChanges]:
        """Links a-b carry with one-way ``delay_ms``: bring the kernel's routes up to
        date (``refresh``: a new epoch; ``began_s``: unix time the update began)."""
        changes = self.router.update(a, b, delay_ms, refresh)
        prefixes = self.prefixes.update(self.router.hops, changes.node, a, b, changes.dest)
        for node, messages in route_messages(prefixes):
            send_all(self.sockets(self.namespaces[node]), messages)
        if self.history is not None:
            keys = zip(a.tolist(), b.tolist(), strict=True)
            carrying = dict(zip(keys, delay_ms.tolist(), strict=True))
            self.history.append(time.time(), carrying, self.router.hops, changes, start_s=began_s)
        return changes, prefixes
