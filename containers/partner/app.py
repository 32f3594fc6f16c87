"""A partner's system as scenarios/multi_gpu_deploy.py deploys it: a user-style app.

It knows nothing of netemu's protocol, only the environment netemu gives every
container (NETEMU_* variables, /etc/hosts) and the stage records it may write
($NETEMU_RESULTS/stages.jsonl, reported by ``netemu stages``).

- ``serve``: on a ground station, serves the software bundle over HTTP;
- ``worker``: on a spacecraft GPU slot: fetches the bundle from the ground
  (it crosses the ground-to-space link and the ISLs at their rates), finds every
  other instance (UDP pings until each answered), then serves stage 2 of a split
  model (TCP: activations in, a result out). Instance 0 also runs jobs: stage 1
  here, stage 2 on a partner on the same spacecraft, then on one across the ISL,
  each job's time in ``$NETEMU_RESULTS/jobs.json``.
"""

import contextlib
import http.server
import json
import os
import socket
import socketserver
import sys
import threading
import time
import urllib.request

import numpy as np

ENV = os.environ
RESULTS = ENV.get("NETEMU_RESULTS", "/tmp")
ME = ENV.get("NETEMU_INSTANCE", "serve")


def stage(unit: str, name: str, **extra) -> None:
    with open(os.path.join(RESULTS, "stages.jsonl"), "a") as f:
        f.write(json.dumps({"id": unit, "stage": name, "unix_ns": time.time_ns(), **extra}) + "\n")


def serve(mb: int, port: int) -> None:
    bundle = os.urandom(mb << 20)

    class Bundle(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # http.server's name for it
            self.send_response(200)
            self.send_header("Content-Length", str(len(bundle)))
            self.end_headers()
            self.wfile.write(bundle)

        def log_message(self, *args):
            pass

    with socketserver.ThreadingTCPServer((ENV["NETEMU_ADDRESS"], port), Bundle) as server:
        server.serve_forever()


def model_stage(x: np.ndarray) -> np.ndarray:
    """A model stage's compute: the same work on every spacecraft."""
    w = np.random.default_rng(0).standard_normal((x.shape[1], x.shape[1]), np.float32)
    return np.tanh(x @ w)


def recv_exactly(conn: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = conn.recv(min(1 << 20, n - got))
        if not chunk:
            raise ConnectionError("peer closed")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def stage_two_server(port: int) -> None:
    """Activations in (8-byte length, then float32 rows of 1024), stage 2, result out."""
    srv = socket.create_server((ENV["NETEMU_ADDRESS"], port + 100))
    while True:
        conn, _ = srv.accept()
        with conn:
            n = int.from_bytes(recv_exactly(conn, 8), "big")
            x = np.frombuffer(recv_exactly(conn, n), np.float32).reshape(-1, 1024)
            out = model_stage(x).sum(axis=0).astype(np.float32).tobytes()
            conn.sendall(len(out).to_bytes(8, "big") + out)


def discover(peers: dict[str, tuple[str, int]], port: int) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ENV["NETEMU_ADDRESS"], port))
    sock.settimeout(0.05)
    heard: set[str] = set()
    others = set(peers) - {ME}
    answered = threading.Event()

    def answer() -> None:  # keep answering others' pings for the whole run
        while True:
            with contextlib.suppress(OSError):
                data, sender = sock.recvfrom(64)
                kind, who = data.decode().split()
                if kind == "ping":
                    sock.sendto(f"pong {ME}".encode(), sender)
                else:
                    heard.add(who)
                    if heard >= others:
                        answered.set()

    threading.Thread(target=answer, daemon=True).start()
    while not answered.wait(0.1):
        for name in others - heard:
            with contextlib.suppress(OSError):
                sock.sendto(f"ping {ME}".encode(), peers[name])


def job(partner: tuple[str, int], activations_mb: int) -> float:
    """Stage 1 here, stage 2 on ``partner``: the job's time in ms."""
    t0 = time.perf_counter()
    rows = (activations_mb << 20) // (1024 * 4)
    x = model_stage(np.random.default_rng(1).standard_normal((rows, 1024), np.float32))
    data = x.astype(np.float32).tobytes()
    with socket.create_connection((partner[0], partner[1] + 100)) as conn:
        conn.sendall(len(data).to_bytes(8, "big") + data)
        n = int.from_bytes(recv_exactly(conn, 8), "big")
        recv_exactly(conn, n)
    return (time.perf_counter() - t0) * 1000


def worker(bundle_url: str, activations_mb: int, jobs: int, same: str, across: str) -> None:
    port = int(ENV["NETEMU_PORT"])
    peers = {}
    for entry in ENV["NETEMU_PEERS"].split(","):
        name, where = entry.split("=")
        host, p = where.rsplit(":", 1)
        peers[name] = (host, int(p))
    stage(f"deploy-{ME}", "started", node=ENV["NETEMU_NODE"])
    attempts, size = 0, None
    while size is None:  # the ground station's link may still be acquiring
        attempts += 1
        try:
            with urllib.request.urlopen(bundle_url, timeout=30) as r:
                size = len(r.read())
        except OSError:
            if attempts == 600:  # two minutes
                sys.exit(f"{ME}: no bundle from {bundle_url}")
            time.sleep(0.2)
    stage(f"deploy-{ME}", "bundle", bytes=size, attempts=attempts)
    threading.Thread(target=stage_two_server, args=(port,), daemon=True).start()
    discover(peers, port)
    stage(f"deploy-{ME}", "answered-by-all")
    if ENV["NETEMU_INDEX"] == "0":
        time.sleep(1.0)  # every stage-2 server listening
        out = {"activations_mb": activations_mb, "same": [], "across": []}
        for _ in range(jobs):
            out["same"].append(job(peers[same], activations_mb))
            out["across"].append(job(peers[across], activations_mb))
        with open(os.path.join(RESULTS, "jobs.json"), "w") as f:
            json.dump({**out, "same_partner": same, "across_partner": across}, f)
        stage(f"deploy-{ME}", "jobs-done")
    threading.Event().wait()  # serve stage 2 and answer pings until stopped


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if sys.argv[1] == "serve":
        serve(int(sys.argv[2]), int(sys.argv[3]))
    else:
        worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6])
