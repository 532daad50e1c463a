"""Memory a proxy holds for idle keep-alive connections (benches/proxy/run.sh).

    idle.py URL HOST N PID...

Opens N connections to URL, sends one request on each (so each proxy has also reached the
app) and leaves them open and idle; after a second, sums VmRSS over the PIDs. Prints
"rss_before_kib rss_after_kib connections_answered app_connections", where the last is the
number of connections the PIDs hold open to the app (port 8080) while the clients are idle.
"""

import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def answered(sock):
    """Reads one small response to its end: headers and a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            return False
        body += chunk
    return head.startswith(b"HTTP/1.1 200")


def main():
    url, host, n, pids = urlsplit(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    time.sleep(1)
    before = rss_kib(pids)
    request = f"GET {url.path or '/'} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    socks, ok = [], 0
    for _ in range(n):
        s = socket.create_connection((url.hostname, url.port), timeout=10)
        s.sendall(request)
        ok += answered(s)
        socks.append(s)
    time.sleep(1)
    after = rss_kib(pids)
    held = subprocess.run(
        ["ss", "-tnpH", "state", "established", "( dport = :8080 )"],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()
    app = sum(any(f"pid={p}," in line for p in pids) for line in held)
    for s in socks:
        s.close()
    print(before, after, ok, app)


if __name__ == "__main__":
    main()
