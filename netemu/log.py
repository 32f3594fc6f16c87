"""netemu's log: Python logging under the ``netemu`` logger, and who sets its level.

netemu's modules log to ``logging.getLogger(__name__)`` (``netemu.live.emulation``,
...): a run coming up and going down, faults and containers at INFO, every link
event at DEBUG, late epochs at WARNING. Records propagate to the root logger, so
pytest's ``caplog`` and an application's own logging see them. The command line's
``-v``/``-q`` set the level and print them to stderr (:func:`configure`); a Mininet
user's ``setLogLevel("info")`` sets it too, and they print as Mininet's own do
(:func:`follow_mininet`, once the run's Mininet hosts are made).
"""

from __future__ import annotations

import logging
import sys

logger = logging.getLogger("netemu")
_set_by: str | None = None  # "cli", "mininet", or None: the level is the root's


def configure(verbosity: int) -> None:
    """The command line's level: ``-q`` (-1: errors), none (warnings), ``-v`` (info),
    ``-vv`` (debug), to stderr as ``netemu: message``."""
    global _set_by
    levels = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}
    logger.setLevel(levels.get(max(-1, verbosity), logging.DEBUG))
    if not any(getattr(h, "_netemu_cli", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("netemu: %(message)s"))
        handler._netemu_cli = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False  # printed once, here
    _set_by = "cli"


class _ToMininet(logging.Handler):
    """Records printed by Mininet's console handler, where nothing else prints them."""

    def emit(self, record: logging.LogRecord) -> None:
        from mininet.log import lg

        if not logging.getLogger().handlers and record.levelno >= lg.level:
            msg = self.format(record)
            lg.handle(logging.makeLogRecord({**record.__dict__, "msg": msg + "\n", "args": ()}))


def follow_mininet() -> None:
    """netemu's level follows Mininet's ``setLogLevel`` from now on (unless the command
    line set it), and its records print with Mininet's."""
    global _set_by
    from mininet.log import lg

    if _set_by == "cli" or getattr(lg, "_netemu_follows", False):
        return
    original = lg.setLevel

    def set_level(level) -> None:  # Mininet's setLogLevel calls this
        original(level)
        if _set_by != "cli":
            logger.setLevel(level)

    lg.setLevel, lg._netemu_follows = set_level, True
    logger.setLevel(lg.level)
    logger.addHandler(_ToMininet())
    _set_by = "mininet"
