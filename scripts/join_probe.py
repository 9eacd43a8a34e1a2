#!/usr/bin/env python3
"""How long a `--join` replica takes to catch up on a large state, and to be promoted.

Usage: scripts/join_probe.py BIN_DIR [MIB]   (BIN_DIR holds quorumkv-server; default 1024 MiB)

Starts three release replicas on loopback (default flags: fsync on, 64 MiB snapshot threshold,
so the leader's log is compacted and the newcomer must start from a snapshot), loads MIB MiB
of state as 16 KiB values under distinct keys, then starts a fourth replica with `--join` and
prints the seconds until it has applied the leader's commit index as of the join, and until
it is a voter.
"""
import os
import socket
import subprocess
import sys
import tempfile
import time

BIN = sys.argv[1] if len(sys.argv) > 1 else "target/release"
MIB = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
BASE = 27380
CLIENT = [f"127.0.0.1:{BASE + i}" for i in range(4)]
PEER = [f"127.0.0.1:{BASE + 1000 + i}" for i in range(4)]
PEERS = ",".join(f"{i + 1}={PEER[i]}" for i in range(3))
VALUE = b"v" * 16384


def command(*words):
    out = f"*{len(words)}\r\n".encode()
    for w in words:
        w = w if isinstance(w, bytes) else str(w).encode()
        out += b"$%d\r\n%s\r\n" % (len(w), w)
    return out


def call(addr, *words, timeout=5.0):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(command(*words))
        data = b""
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            data += chunk
            if data.startswith(b"$") and data.count(b"\r\n") >= 2 or not data.startswith(b"$") and data.endswith(b"\r\n"):
                break
        return data.decode(errors="replace")


def info(addr):
    try:
        text = call(addr, "INFO", timeout=2)
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in text.split("\r\n") if ":" in line)


def leader():
    while True:
        for addr in CLIENT[:3]:
            if info(addr).get("role") == "leader":
                return addr
        time.sleep(0.1)


def load(addr, count, pipeline=64):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port))) as s:
        sent = 0
        while sent < count:
            batch = min(pipeline, count - sent)
            s.sendall(b"".join(command("SET", f"key-{sent + i}", VALUE) for i in range(batch)))
            replies = b""
            while replies.count(b"\r\n") < batch:
                replies += s.recv(1 << 16)
            if b"-" in replies:
                raise SystemExit(f"write refused: {replies[:200]!r}")
            sent += batch


def main():
    root = tempfile.mkdtemp(prefix="join-probe-")
    procs = []
    for i in range(3):
        args = [f"{BIN}/quorumkv-server", "--id", str(i + 1), "--client-addr", CLIENT[i], "--peers", PEERS,
                "--data-dir", os.path.join(root, f"d{i + 1}")]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, f"log{i + 1}"), "wb")))
    try:
        addr = leader()
        count = MIB * 1024 * 1024 // len(VALUE)
        started = time.monotonic()
        load(addr, count)
        print(f"loaded {count} keys x {len(VALUE)} bytes ({MIB} MiB) in {time.monotonic() - started:.1f} s")
        commit = int(info(addr)["commit_index"])
        snap = int(info(addr)["snapshot_index"])
        print(f"leader commit {commit}, snapshot at {snap}")
        args = [f"{BIN}/quorumkv-server", "--id", "4", "--client-addr", CLIENT[3], "--peer-addr", PEER[3],
                "--data-dir", os.path.join(root, "d4"), "--join", ",".join(CLIENT[:3])]
        t0 = time.monotonic()
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(os.path.join(root, "log4"), "wb")))
        caught_up = promoted = None
        while time.monotonic() - t0 < 600 and promoted is None:
            view = info(CLIENT[3])
            now = time.monotonic() - t0
            if caught_up is None and int(view.get("applied_index", "0") or 0) >= commit:
                caught_up = now
            if "4" in view.get("members", "").split(","):
                promoted = now
            time.sleep(0.05)
        print(f"joined replica caught up (applied {commit}) after {caught_up:.2f} s, "
              f"promoted to voter after {promoted:.2f} s")
        print(f"keys on the new replica: {info(CLIENT[3]).get('keys')}")
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    main()
