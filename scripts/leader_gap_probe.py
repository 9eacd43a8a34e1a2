#!/usr/bin/env python3
"""How long clients see no leader: `LEADER TRANSFER` versus `kill -9` of the leader.

Usage: scripts/leader_gap_probe.py BIN_DIR [TRIES]   (BIN_DIR holds quorumkv-server)

Starts three release replicas on loopback with the product's default timings (election
timeout 1000 ms, heartbeat 100 ms), keeps one writer doing SETs one at a time (following
-NOTLEADER, moving on after an error), and for each try measures the longest interval
between two acknowledged writes around the event: TRIES leader transfers, then TRIES kill -9
of the leader (restarted after each). Prints p50 and max of both, in milliseconds.
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release"
TRIES = int(sys.argv[2]) if len(sys.argv) > 2 else 20
BASE = 26380
CLIENT = [f"127.0.0.1:{BASE + i}" for i in range(3)]
PEERS = ",".join(f"{i + 1}=127.0.0.1:{BASE + 1000 + i}" for i in range(3))


def start(i, root):
    args = [f"{BIN}/quorumkv-server", "--id", str(i + 1), "--client-addr", CLIENT[i], "--peers", PEERS,
            "--data-dir", os.path.join(root, f"d{i + 1}")]
    log = open(os.path.join(root, f"log{i + 1}"), "ab")
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log)


def call(addr, *words, timeout=0.5):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.settimeout(timeout)
        req = f"*{len(words)}\r\n" + "".join(f"${len(w)}\r\n{w}\r\n" for w in words)
        s.sendall(req.encode())
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        if data.startswith(b"$"):
            while data.count(b"\r\n") < 2:
                data += s.recv(65536)
        return data.decode(errors="replace")


def info(addr):
    try:
        text = call(addr, "INFO")
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)


def leader_index():
    for i, addr in enumerate(CLIENT):
        if info(addr).get("role") == "leader":
            return i
    return None


successes = []
stop = threading.Event()


def writer():
    target, n = 0, 0
    while not stop.is_set():
        n += 1
        try:
            reply = call(CLIENT[target], "SET", f"k{n % 100}", str(n), timeout=0.3)
        except OSError:
            target = (target + 1) % 3
            continue
        if reply.startswith("+OK"):
            successes.append(time.monotonic())
        elif reply.startswith("-NOTLEADER") and ":" in reply:
            addr = reply.split()[1]
            target = CLIENT.index(addr) if addr in CLIENT else (target + 1) % 3
        else:
            target = (target + 1) % 3
            time.sleep(0.002)


def gap_around(t0, t1):
    """Longest interval without an acknowledged write in [t0, t1]."""
    points = [t0] + [t for t in successes if t0 <= t <= t1] + [t1]
    return max(b - a for a, b in zip(points, points[1:]))


def wait_leader(deadline=30):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        i = leader_index()
        if i is not None:
            return i
        time.sleep(0.05)
    raise SystemExit("no leader")


def main():
    root = tempfile.mkdtemp(prefix="leader-gap-")
    procs = [start(i, root) for i in range(3)]
    try:
        leader = wait_leader()
        threading.Thread(target=writer, daemon=True).start()
        time.sleep(1)
        transfer, crash = [], []
        for _ in range(TRIES):
            leader = wait_leader()
            target = (leader + 1) % 3
            t0 = time.monotonic()
            reply = call(CLIENT[leader], "LEADER", "TRANSFER", str(target + 1), timeout=5)
            time.sleep(2)
            transfer.append(gap_around(t0 - 0.05, time.monotonic()))
            if not reply.startswith("+OK"):
                print("transfer:", reply.strip())
        for _ in range(TRIES):
            leader = wait_leader()
            t0 = time.monotonic()
            procs[leader].send_signal(signal.SIGKILL)
            procs[leader].wait()
            time.sleep(4)
            crash.append(gap_around(t0 - 0.05, time.monotonic()))
            procs[leader] = start(leader, root)
            time.sleep(2)
        stop.set()
        for name, gaps in (("leader transfer", transfer), ("kill -9 of the leader", crash)):
            gaps = sorted(g * 1000 for g in gaps)
            print(f"{name}: {len(gaps)} tries, longest write gap p50 {gaps[len(gaps) // 2]:.0f} ms, "
                  f"max {gaps[-1]:.0f} ms")
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    main()
