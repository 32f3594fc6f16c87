"""The live emulation: a plan brought to life in namespaces, epoch by epoch.

:class:`.emulation.Emulation` sequences the parts: bring-up, the link table,
the controller's clock loop, route installation, users' containers
(:mod:`.workloads`), the run log and the run folder; signals turn into one
``Stopped`` however a run is ended.
"""
