"""Captures and their analysis: taps on nodes and links, pcapng files with the
run's events as comments, the Wireshark dissector, and per-packet analysis.
Protocols register themselves here (:func:`.analysis.register_payload`,
:func:`.wireshark.register`); nothing here imports a workload.
"""
