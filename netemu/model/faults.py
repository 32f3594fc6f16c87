"""Faults on purpose: what breaks, when, for how long, and what that means for the links.

Five kinds, each at an orbital time (seconds after the run's start) and for a
while (``for_s``; none: for good):

- ``cut`` a link ``a-b``: the pair cannot hold a link; traffic reroutes;
- ``terminal`` ``node-peer``: the node's optical terminal pointing at ``peer``
  fails: that link drops and the node has one terminal fewer, so it links up
  with another partner where it can (which must acquire);
- ``lose`` a node: all its links down for good (and its services killed, by
  :mod:`netemu.services.deploy`);
- ``reboot`` a node: all its links down for ``for_s``, then it links up again
  (acquiring) and its services restart;
- ``degrade`` a link: extra loss (``loss_percent``) and jitter (``jitter_ms``).

:class:`FaultPlan` answers, for any orbital time, what is broken
(:class:`Broken`, which the link model and the shaping apply) and which faults
began or ended (the run's ``fault`` and ``fault-cleared`` events). Faults come
from the topology file's ``faults:`` list (with ``random:`` faults drawn from
a seed), from ``netemu run --fault``, and from :meth:`Emulation.inject
<netemu.live.emulation.Emulation.inject>` while a run goes. Pure computation.
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass, field

from netemu.errors import InputError
from netemu.model.events import FaultEvent
from netemu.model.events import fault as fault_event

KINDS = ("cut", "terminal", "lose", "reboot", "degrade")
#: Kinds that name a link (``a-b``); the others name a node.
LINK_KINDS = ("cut", "terminal", "degrade")


@dataclass(frozen=True)
class Fault:
    kind: str
    target: tuple[str, ...]  # (node,) or (a, b)
    at_s: float  # orbital seconds after the run's start
    for_s: float | None = None  # None: until the end of the run
    loss_percent: float = 0.0
    jitter_ms: float = 0.0

    def active(self, t_s: float) -> bool:
        return self.at_s <= t_s and (self.for_s is None or t_s < self.at_s + self.for_s)

    def describe(self) -> dict:
        """The fields of this fault's events."""
        out = {"fault": self.kind, "target": "-".join(self.target)}
        if self.for_s is not None:
            out["for_s"] = self.for_s
        if self.kind == "degrade":
            out |= {"loss_percent": self.loss_percent, "jitter_ms": self.jitter_ms}
        return out


@dataclass
class Broken:
    """What the faults in force break, by node index."""

    dead: set[int] = field(default_factory=set)  # lost or rebooting nodes
    cut: set[tuple[int, int]] = field(default_factory=set)  # pairs (a < b) that cannot link
    terminals_lost: dict[int, int] = field(default_factory=dict)  # node -> terminals failed
    degraded: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.dead or self.cut or self.terminals_lost or self.degraded)


class FaultPlan:
    """The faults of a run; more can be added while it goes."""

    def __init__(self, faults: list[Fault], names: list[str]):
        self.index = {name: i for i, name in enumerate(names)}
        self.faults: list[Fault] = []
        self._active: set[Fault] = set()
        self._last_s = float("-inf")
        for f in faults:
            self.add(f)

    def add(self, fault: Fault) -> None:
        for name in fault.target:
            if name not in self.index:
                raise InputError(
                    f"fault {fault.kind} {'-'.join(fault.target)}: no node named {name!r}"
                )
        self.faults.append(fault)

    def end(self, fault: Fault, t_s: float) -> None:
        """``fault`` over at ``t_s`` (orbital seconds), however long it was to last."""
        i = self.faults.index(fault)
        self.faults[i] = dataclasses.replace(fault, for_s=max(t_s - fault.at_s, 1e-6))

    def restart(self) -> None:
        """Forget which faults were in force: the next :meth:`events` reports all as new."""
        self._active = set()
        self._last_s = float("-inf")

    def broken(self, t_s: float) -> Broken:
        out = Broken()
        for f in self.faults:
            if not f.active(t_s):
                continue
            ix = [self.index[n] for n in f.target]
            pair = (min(ix), max(ix))
            if f.kind in ("lose", "reboot"):
                out.dead.add(ix[0])
            elif f.kind == "cut":
                out.cut.add(pair)
            elif f.kind == "terminal":
                out.cut.add(pair)
                out.terminals_lost[ix[0]] = out.terminals_lost.get(ix[0], 0) + 1
            elif f.kind == "degrade":
                loss, jitter = out.degraded.get(pair, (0.0, 0.0))
                out.degraded[pair] = (
                    1 - (1 - loss) * (1 - f.loss_percent / 100),
                    jitter + f.jitter_ms,
                )
        return out

    def events(self, t_s: float) -> list[FaultEvent]:
        """Faults that began (``fault``) or ended (``fault-cleared``) since the last call; one
        that began and ended in between (shorter than an epoch: it broke nothing) both."""
        now = {f for f in self.faults if f.active(t_s)}
        brief = {f for f in self.faults if self._last_s < f.at_s <= t_s} - now - self._active
        began = sorted((now - self._active) | brief, key=lambda f: f.at_s)
        ended = sorted((self._active - now) | brief, key=lambda f: f.at_s)
        self._active, self._last_s = now, t_s
        return [fault_event(True, f.describe()) for f in began] + [
            fault_event(False, f.describe()) for f in ended
        ]


def parse_target(kind: str, text: str, where: str) -> tuple[str, ...]:
    if kind not in KINDS:
        raise InputError(f"unknown fault kind {kind!r} (one of {', '.join(KINDS)})", key=where)
    parts = tuple(text.split("-"))
    if kind in LINK_KINDS and (len(parts) != 2 or parts[0] == parts[1]):
        raise InputError(f"a {kind} fault names a link as NODE-NODE, got {text!r}", key=where)
    if kind not in LINK_KINDS and len(parts) != 1:
        raise InputError(f"a {kind} fault names one node, got {text!r}", key=where)
    return parts


_CLI = re.compile(
    r"^(?P<kind>\w+):(?P<target>[\w-]+)(?:@\+?(?P<at>[\d.]+)s?)?(?:/(?P<for>[\d.]+)s?)?"
    r"(?P<params>(?:,\w+=[\d.]+)*)$"
)


def parse_cli(text: str) -> Fault:
    """``KIND:TARGET[@+SECONDS][/SECONDS][,loss=P][,jitter=MS]``, e.g. ``cut:kep3-kep4@+60/30``
    (at 60 orbital s after the start, for 30 s), ``lose:kep5@+120``,
    ``degrade:kep0-kep1@+10/60,loss=20,jitter=2``."""
    m = _CLI.match(text.strip())
    if not m:
        raise InputError(
            f"fault {text!r}: write KIND:TARGET[@+SECONDS][/SECONDS][,loss=P][,jitter=MS], "
            "e.g. cut:kep3-kep4@+60/30",
            key="--fault",
        )
    params = dict(p.split("=") for p in m["params"].split(",") if p)
    unknown = set(params) - {"loss", "jitter"}
    if unknown:
        raise InputError(f"fault {text!r}: unknown parameter {sorted(unknown)[0]!r}", key="--fault")
    kind = m["kind"]
    return Fault(
        kind,
        parse_target(kind, m["target"], "--fault"),
        float(m["at"] or 0.0),
        float(m["for"]) if m["for"] else None,
        float(params.get("loss", 0.0)),
        float(params.get("jitter", 0.0)),
    )


def random_faults(spec, names: list[str], links: list[tuple[str, str]]) -> list[Fault]:
    """``count`` faults of the given ``kinds`` at times drawn from ``seed`` within ``within_s``,
    on nodes (satellites) and links (ISLs) of the topology: the same seed, the same faults."""
    rng = random.Random(spec.seed)
    out = []
    for _ in range(spec.count):
        kind = rng.choice(spec.kinds)
        if kind in LINK_KINDS:
            a, b = rng.choice(links)
            target = (a, b) if kind != "terminal" or rng.random() < 0.5 else (b, a)
        else:
            target = (rng.choice(names),)
        at = round(rng.uniform(0, spec.within_s), 3)
        lasting = None if kind == "lose" else round(rng.uniform(*spec.for_s), 3)
        extra = {"loss_percent": spec.loss_percent} if kind == "degrade" else {}
        out.append(Fault(kind, target, at, lasting, **extra))
    return sorted(out, key=lambda f: f.at_s)
