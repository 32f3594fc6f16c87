"""Kernel adapters: the only modules that enter namespaces and talk to the kernel.

Named network namespaces, one command-batch runner and the run's state file
(:mod:`.netns`), netlink messages and one socket per namespace (:mod:`.netlink`),
podman as netemu runs it (:mod:`.containers`), the GPUs present (:mod:`.gpus`),
and giving results back to the user who ran sudo (:mod:`.privileges`).
"""
