"""Captures and their analysis: taps, pcapng files, the dissector, per-packet analysis.

Taps on nodes and links, pcapng files with the run's events as comments, the
Wireshark dissector, and analysis packet by packet. Protocols register themselves
here (:func:`.analysis.register_payload`, :func:`.wireshark.register`); nothing
here imports a workload.
"""
