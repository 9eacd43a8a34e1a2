#!/usr/bin/env python3
"""Issue 14's adversarial cases against three release `quorumkv-server` processes on loopback.

Usage: cargo build --release && python3 scripts/hardening_probe.py CASE
  CASE is one of:
    get16     1,000 pipelined GETs of a 16 MiB value from a client that never reads
    exists    24 pipelined EXISTS of 1,000 keys of 64 KiB (62.5 MiB each)
    set16     100 pipelined SETs of 16 MiB values

Prints the leader's CPU seconds and peak RSS (VmHWM) for the case, and whether it kept its role
and term. Each run starts a fresh cluster in a temporary directory (ports 16380-16382, 17380-17382)
and stops it at the end.
"""

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

SERVER = os.path.join(os.path.dirname(__file__), "..", "target", "release", "quorumkv-server")
CLIENT_PORTS = [16380, 16381, 16382]
PEERS = ",".join(f"{i + 1}=127.0.0.1:{17380 + i}" for i in range(3))


def info(port):
    """INFO of the replica on `port`, as a dict (empty if it does not answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.sendall(b"INFO\r\n")
            data = b""
            while b"consensus_error" not in data or not data.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in data.decode().split("\r\n") if ":" in line)


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return -1


def read_lines(sock, n):
    data = b""
    while data.count(b"\r\n") < n:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n")[:n]


def get16(sock):
    value = b"v" * (16 << 20)
    sock.sendall(b"*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n" % len(value) + value + b"\r\n")
    print("SET:", read_lines(sock, 1))
    sock.sendall(b"GET big\r\n" * 1000)
    time.sleep(5)  # never read: the server must close the connection, not buffer 16 GB


def exists(sock):
    key = b"k" * 65536
    request = b"*1001\r\n$6\r\nEXISTS\r\n" + (b"$65536\r\n" + key + b"\r\n") * 1000
    threading.Thread(target=lambda: [sock.sendall(request) for _ in range(24)]).start()
    replies = read_lines(sock, 24)
    print("replies :0 =", sum(r == b":0" for r in replies), "of 24")


def set16(sock):
    value = b"v" * (16 << 20)
    n = 100
    writer = threading.Thread(
        target=lambda: [
            sock.sendall(b"*3\r\n$3\r\nSET\r\n$2\r\nk%d\r\n$%d\r\n" % (i % 10, len(value)) + value + b"\r\n")
            for i in range(n)
        ]
    )
    writer.start()
    replies = read_lines(sock, n)
    writer.join()
    others = sorted({r[:40] for r in replies if r != b"+OK"})
    print("OK", sum(r == b"+OK" for r in replies), "of", n, "others", others)


def main():
    cases = {"get16": get16, "exists": exists, "set16": set16}
    if len(sys.argv) != 2 or sys.argv[1] not in cases:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i in range(3):
            args = [SERVER, "--id", str(i + 1), "--client-addr", f"127.0.0.1:{CLIENT_PORTS[i]}",
                    "--peers", PEERS, "--data-dir", os.path.join(tmp, f"d{i + 1}")]
            log = open(os.path.join(tmp, f"log{i + 1}"), "w")
            procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=log))
        try:
            deadline = time.time() + 30
            leader = None
            while leader is None and time.time() < deadline:
                leader = next((p for p in CLIENT_PORTS if info(p).get("role") == "leader"), None)
                time.sleep(0.1)
            if leader is None:
                sys.exit("no leader within 30 s")
            pid = procs[CLIENT_PORTS.index(leader)].pid
            term = info(leader)["term"]
            cpu = cpu_seconds(pid)
            started = time.time()
            with socket.create_connection(("127.0.0.1", leader)) as sock:
                sock.settimeout(120)
                cases[sys.argv[1]](sock)
            print(f"elapsed {time.time() - started:.2f} s, leader CPU {cpu_seconds(pid) - cpu:.2f} s, "
                  f"leader peak RSS {peak_rss_mib(pid)} MiB")
            after = info(leader)
            print(f"leader role {after.get('role')}, term {term} -> {after.get('term')}")
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait()


if __name__ == "__main__":
    main()
