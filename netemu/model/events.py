"""Events: what happened to the network, each kind declared once, with its JSON form.

An event is a plain JSON object (a dict) whose ``type`` names its kind; the
constructors below are the only places events are made, so each kind has one
set of fields wherever it appears: ``netemu plan --json``, the run log, the
captures' event comments, :meth:`netemu.testing.network.Network.expect_event`. A live run
stamps each with ``time`` (orbital, ISO 8601) and ``unix_s`` (the wall clock).

Pure: no root, no programs.
"""

# No `from __future__ import annotations`: TypedDict reads NotRequired from evaluated
# annotations only.
from typing import Literal, NotRequired, TypedDict


class LinkUp(TypedDict):
    """A link became feasible (its terminals start acquiring each other)."""

    type: Literal["link-up"]
    a: str
    b: str
    kind: str


class LinkDown(TypedDict):
    """A link stopped being feasible, and why (``earth-blocked``, ``out-of-range``,
    ``below-elevation``, ``cutoff-latitude``, ``not-selected``, ``no-position``, or a
    fault's ``fault: link cut`` / ``fault: node down``)."""

    type: Literal["link-down"]
    a: str
    b: str
    kind: str
    reason: str


class LinkReady(TypedDict):
    """A link finished acquiring: it carries traffic from now on."""

    type: Literal["link-ready"]
    a: str
    b: str
    kind: str


#: An access node (aircraft, ground station) lost a satellite (``from``) and moved to
#: another (``to``): ``break-before-make``, traffic stopping ``interruption_s`` (the new
#: link's acquisition), or ``make-before-break``, when it already held another carrying
#: link. (A TypedDict in this form: ``from`` is a Python keyword.)
Handover = TypedDict(
    "Handover",
    {
        "type": Literal["handover"],
        "node": str,
        "from": str,
        "reason": str,
        "to": str,
        "mode": Literal["break-before-make", "make-before-break"],
        "interruption_s": float,
    },
)


class FaultEvent(TypedDict):
    """A fault began (``fault``) or ended (``fault-cleared``): its kind, its target
    (``a-b`` or a node), how long it lasts, a degradation's loss and jitter."""

    type: Literal["fault", "fault-cleared"]
    fault: str
    target: str
    for_s: NotRequired[float]
    loss_percent: NotRequired[float]
    jitter_ms: NotRequired[float]


class Late(TypedDict):
    """The controller applied an epoch more than half a step after its time."""

    type: Literal["late"]
    late_s: float


class Routes(TypedDict):
    """An update changed this many routes."""

    type: Literal["routes"]
    changed: int


class Container(TypedDict):
    """A user's container instance ``started``, ``exited`` by itself (with its
    ``exit_status``) or was ``stopped`` (by a fault on its node)."""

    type: Literal["container"]
    instance: str
    node: str
    what: Literal["started", "exited", "stopped"]
    exit_status: NotRequired[int]


Event = LinkUp | LinkDown | LinkReady | Handover | FaultEvent | Late | Routes | Container

#: Each ``type``, and the declaration of its fields.
BY_TYPE: dict[str, type] = {
    "link-up": LinkUp,
    "link-down": LinkDown,
    "link-ready": LinkReady,
    "handover": Handover,
    "fault": FaultEvent,
    "fault-cleared": FaultEvent,
    "late": Late,
    "routes": Routes,
    "container": Container,
}


def link_up(a: str, b: str, kind: str) -> LinkUp:
    return {"type": "link-up", "a": a, "b": b, "kind": kind}


def link_down(a: str, b: str, kind: str, reason: str) -> LinkDown:
    return {"type": "link-down", "a": a, "b": b, "kind": kind, "reason": reason}


def link_ready(a: str, b: str, kind: str) -> LinkReady:
    return {"type": "link-ready", "a": a, "b": b, "kind": kind}


def handover(
    node: str, old: str, new: str, reason: str, mode: str, interruption_s: float = 0.0
) -> Handover:
    return {"type": "handover", "node": node, "from": old, "reason": reason, "to": new,
            "mode": mode, "interruption_s": interruption_s}  # type: ignore[typeddict-item]  # fmt: skip


def fault(began: bool, fields: dict) -> FaultEvent:
    """``fields``: :meth:`netemu.model.faults.Fault.describe`."""
    return {"type": "fault" if began else "fault-cleared", **fields}  # type: ignore[typeddict-item]


def late(late_s: float) -> Late:
    return {"type": "late", "late_s": round(late_s, 3)}


def routes(changed: int) -> Routes:
    return {"type": "routes", "changed": changed}


def container(instance: str, node: str, what: str, exit_status: int | None = None) -> Container:
    out: Container = {"type": "container", "instance": instance, "node": node, "what": what}  # type: ignore[typeddict-item]
    if exit_status is not None:
        out["exit_status"] = exit_status
    return out
