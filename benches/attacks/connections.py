#!/usr/bin/env python3
"""What an anonymous client can make one herald process spend.

Starts `herald serve` (the binary given) on a free loopback port against
DATABASE_URL, runs one attack, and prints one JSON line: the process's RSS
before, at its peak and after, its open descriptors, and the slowest health
check answered during the attack. Loopback only; every loop is bounded in
count and time and stops by itself.

  benches/attacks/connections.py BINARY flood    # polling handshakes from 50 kept-alive loops, 12 s
  benches/attacks/connections.py BINARY slow     # 200 half-sent requests and 200 idle connections
  benches/attacks/connections.py BINARY fds      # 1,100 idle connections with the file limit at 1,024
  benches/attacks/connections.py BINARY frames   # 20 unauthenticated sockets, one 15 MiB frame each

Used to give the before/after figures of herald's hardening; not a test.
"""

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time

SECRET = "attack-secret-that-is-long-enough"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def descriptors(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def health(port, path="/health/ready", timeout=70.0):
    """Seconds a fresh connection took to get an answer, or None."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            if not s.recv(64).startswith(b"HTTP/1.1 "):
                return None
    except OSError:
        return None
    return time.monotonic() - started


def start(binary, port, nofile=None):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "JWT_SECRET": SECRET,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "RUST_LOG": "warn",
    }

    def limit():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    child = subprocess.Popen([binary, "serve"], env=env, preexec_fn=limit,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if health(port, timeout=1.0) is not None:
            return child
        time.sleep(0.1)
    child.kill()
    sys.exit("herald did not start")


class Watch(threading.Thread):
    """Samples RSS and health while an attack runs."""

    def __init__(self, pid, port):
        super().__init__(daemon=True)
        self.pid, self.port = pid, port
        self.peak, self.slowest, self.unanswered = 0, 0.0, 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_kib(self.pid))
            took = health(self.port, timeout=5.0)
            if took is None:
                self.unanswered += 1
                self.slowest = max(self.slowest, 5.0)
            else:
                self.slowest = max(self.slowest, took)
            self.stop.wait(0.2)


def flood(port, seconds=12.0, loops=50):
    request = b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n\r\n"
    counts = {"sent": 0, "accepted": 0, "refused": 0}
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def loop():
        sent = accepted = refused = 0
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            buffer = b""
            while time.monotonic() < deadline:
                s.sendall(request)
                while b"\r\n\r\n" not in buffer:
                    chunk = s.recv(65536)
                    if not chunk:
                        raise OSError("closed")
                    buffer += chunk
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                while len(rest) < length:
                    rest += s.recv(65536)
                buffer = rest[length:]
                sent += 1
                if head.startswith(b"HTTP/1.1 200"):
                    accepted += 1
                else:
                    refused += 1
        except OSError:
            pass
        with lock:
            counts["sent"] += sent
            counts["accepted"] += accepted
            counts["refused"] += refused

    threads = [threading.Thread(target=loop) for _ in range(loops)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts["per_second"] = round(counts["sent"] / seconds)
    return counts


def open_idle(port, count, first_bytes=b""):
    held = []
    for _ in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            if first_bytes:
                s.sendall(first_bytes)
            held.append(s)
        except OSError:
            break
    return held


def still_open(sockets, wait=0.2):
    """How many of `sockets` the server has not closed: each is read (what
    the server sent is discarded) until it ends or stays quiet for `wait`."""
    alive = 0
    for s in sockets:
        s.settimeout(wait)
        try:
            while s.recv(65536):
                pass
        except socket.timeout:
            alive += 1
        except OSError:
            pass
    return alive


def slow(port, wait=20.0):
    half = open_idle(port, 200, b"GET /health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    idle = open_idle(port, 200)
    time.sleep(wait)
    return {"half_sent_open_after_s": wait, "half_sent_open": still_open(half),
            "idle_open": still_open(idle), "opened": len(half) + len(idle)}


def fds(port, within=70.0):
    idle = open_idle(port, 1100)
    # Retried until answered: a refused connection is answered at once.
    started = time.monotonic()
    answered, attempts = None, 0
    while answered is None and time.monotonic() - started < within:
        attempts += 1
        if health(port, "/health/live", timeout=within) is not None:
            answered = time.monotonic() - started
        else:
            time.sleep(0.05)
    return {"opened": len(idle), "health_live_s": answered and round(answered, 3),
            "health_attempts": attempts, "open_after": still_open(idle)}


def frames(port, count=20):
    key = b"dGhlIHNhbXBsZSBub25jZQ=="
    held = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: x\r\n"
                  b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                  b"Sec-WebSocket-Key: " + key + b"\r\n\r\n")
        held.append(s)
    size = 15 << 20
    header = bytes([0x81, 0x80 | 127]) + size.to_bytes(8, "big") + b"\0\0\0\0"
    payload = b"4" * size

    def send(s):
        try:
            s.sendall(header + payload)
        except OSError:
            pass

    threads = [threading.Thread(target=send, args=(s,)) for s in held]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    time.sleep(1)
    return {"sockets": count, "frame_mib": 15, "still_open": still_open(held)}


def main():
    if len(sys.argv) != 3 or sys.argv[2] not in ("flood", "slow", "fds", "frames"):
        sys.exit(__doc__)
    binary, attack = sys.argv[1], sys.argv[2]
    port = free_port()
    herald = start(binary, port, nofile=1024 if attack == "fds" else None)
    try:
        before = rss_kib(herald.pid)
        watch = Watch(herald.pid, port)
        if attack != "fds":
            watch.start()
        result = {"flood": flood, "slow": slow, "fds": fds, "frames": frames}[attack](port)
        result["descriptors_during"] = descriptors(herald.pid)
        watch.stop.set()
        peak = max(watch.peak, rss_kib(herald.pid))
        time.sleep(10)
        after = rss_kib(herald.pid)
        result.update({
            "attack": attack, "binary": binary,
            "rss_before_mib": round(before / 1024, 1), "rss_peak_mib": round(peak / 1024, 1),
            "rss_10s_after_mib": round(after / 1024, 1),
        })
        if attack != "fds":
            result["health_slowest_s"] = round(watch.slowest, 3)
            result["health_unanswered"] = watch.unanswered
        print(json.dumps(result))
    finally:
        herald.terminate()
        herald.wait(timeout=30)


if __name__ == "__main__":
    main()
