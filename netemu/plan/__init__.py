"""Planning: from the model to each epoch's links, shapes and events.

Pure computation, no root: positions (:mod:`.geometry`), which links the
policies make feasible (:mod:`.links`), laser acquisition (:mod:`.acquisition`),
the planner that walks epochs and says what changed (:mod:`.planner`), and
what each link direction does to packets (:mod:`.shapes`, the one owner of a
link's delay, loss, jitter and rate).
"""
