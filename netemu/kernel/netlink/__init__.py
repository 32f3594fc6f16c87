"""rtnetlink as netemu speaks it: messages declared once per kind, one socket per namespace.

One request per change (what ``ip`` or pyroute2's ``route()`` do) costs a round trip
each; a mega-constellation needs millions of routes at bring-up and thousands per
epoch. So messages of a fixed layout are declared as numpy structured dtypes and
encoded many at a time (:mod:`.route`, :mod:`.interface`), messages with nested
attributes are packed per request (:mod:`.qdisc`, where there are few), and all of
them are written back to back on the namespace's one socket (:mod:`.sockets`),
only the last asking for an acknowledgement, errors read as they come. The
netlink header and attribute layouts are declared once (:mod:`.message`), as
pyroute2 declares ``tcmsg`` or ``rtmsg`` once; tests decode netemu's messages
with pyroute2, an independent parser.
"""
