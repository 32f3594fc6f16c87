"""Mininet hosts for the nodes: a shell in each node's namespace, made on first use.

netemu makes the namespaces and links itself, in batches; Mininet gives what its
users know (``host.cmd``, ``net.pingAll``, its CLI). A node's :class:`NetnsHost`
enters the node's existing named namespace, its processes tagged with the run;
its interfaces toward its peers are registered as Mininet interfaces as they come.
"""

from __future__ import annotations

import contextlib
import os
import signal

from netemu.routes import addressing


class Hosts:
    def __init__(self, names: list[str], namespaces: list[str], env: dict[str, str]):
        from mininet.net import Mininet

        self.names = names
        self.namespaces = namespaces
        self.env = env
        self.net = Mininet(topo=None, controller=None, build=False, autoSetMacs=False)

    def host(self, node: int, peers: list[int]):
        """Node's host (made now if not yet, with its interfaces toward ``peers``)."""
        host = self.net.nameToNode.get(self.names[node])
        if host is None:
            host = self.net.addHost(
                self.names[node], cls=_netns_host_class(), netns=self.namespaces[node], env=self.env
            )
            for peer in peers:
                self.link_made(node, peer)
        return host

    def link_made(self, node: int, peer: int) -> None:
        """Tell node's host (if made yet) about its interface toward peer."""
        from mininet.link import Intf

        host = self.net.nameToNode.get(self.names[node])
        if host is None:
            return
        intf = Intf(
            addressing.interface_name(self.names[peer]), node=host, up=None,
            moveIntfFn=_already_there,
        )  # fmt: skip
        intf.ip = addressing.link_addresses(node, peer, len(self.names))[node > peer]
        intf.prefixLen = 31

    def stop(self) -> None:
        """Every host's shell killed (with what it started in its process group)."""
        for host in self.net.hosts:
            if host.shell and host.shell.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(host.shell.pid, signal.SIGKILL)
                host.shell.wait()
            host.stdin.close()
            os.close(host.slave)
        self.net.hosts.clear()
        self.net.nameToNode.clear()


def _netns_host_class():
    from mininet.node import Host

    class NetnsHost(Host):
        """A Mininet host whose shell enters an existing named network namespace, its
        processes tagged with the run (``env``)."""

        def __init__(self, name: str, netns: str, env: dict[str, str], **params):
            self.netns_name = netns
            self.env = env
            super().__init__(name, inNamespace=False, **params)

        def _popen(self, cmd, **params):
            if getattr(self, "shell", None) is None and cmd[:1] == ["mnexec"]:
                cmd = [*cmd[:2], "ip", "netns", "exec", self.netns_name, *cmd[2:]]
            params.setdefault("env", self.env)
            return super()._popen(cmd, **params)

    return NetnsHost


def _already_there(intf, node) -> None:
    """Mininet moves new interfaces into the host's namespace; ours are created there."""
