"""Memory per idle client connection: start one single-replica server, open N idle connections.

Usage: python3 scripts/idle_connections_probe.py path/to/quorumkv-server N (raise ulimit -n first).
Prints the RSS before, with the connections open, and after they close."""
import socket, subprocess, sys, time, os
bin_ = sys.argv[1]; n = int(sys.argv[2])
d = f"/tmp/qkv-idle-{os.getpid()}"
subprocess.run(["rm", "-rf", d])
p = subprocess.Popen([bin_, "--id", "1", "--client-addr", "127.0.0.1:26390", "--peer-addr", "127.0.0.1:27390",
                      "--peers", "1=127.0.0.1:27390", "--data-dir", d, "--cluster-name", "idle"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
def rss():
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith("VmRSS"): return int(line.split()[1])
for _ in range(100):
    try:
        s = socket.create_connection(("127.0.0.1", 26390)); s.sendall(b"PING\r\n"); s.recv(100); s.close(); break
    except OSError: time.sleep(0.1)
time.sleep(0.5)
base = rss()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", 26390)); s.sendall(b"PING\r\n"); socks.append(s)
for s in socks: s.recv(100)
time.sleep(1)
full = rss()
for s in socks: s.close()
time.sleep(2)
after = rss()
print(f"{bin_}: {n} idle connections: RSS {base} KB -> {full} KB ({(full-base)/n:.1f} KB each), after close {after} KB")
p.terminate(); p.wait()
