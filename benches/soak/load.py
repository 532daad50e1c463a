"""The soak run's load: every second, RATE HTTP/1.1 requests (curl, one keep-alive
connection), RATE HTTP/2 requests (one prior-knowledge connection, with the `h2` package:
curl 7.88 fails every reuse of a prior-knowledge connection with error 16) and RATE opaque
TCP exchanges (a fresh connection each, 1 KiB echoed), all through the outbound proxy.
Prints `proto ok failed` lines at the end, and the first failures as they happen."""
import asyncio
import os
import sys
import time
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events

URL, HOST, TCP_PORT, RATE, SECONDS = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
counts = {p: [0, 0] for p in ("http1", "http2", "tcp")}
shown = 0


def failed(proto, why):
    global shown
    counts[proto][1] += 1
    if shown < 20:
        shown += 1
        print(f"{time.strftime('%H:%M:%S')} {proto} failed: {why}", file=sys.stderr, flush=True)


async def curl_batch(proto, flags):
    args = ["curl", "-s", "--max-time", "5", "-w", "%{http_code}\\n", "-H", f"Host: {HOST}", *flags]
    for _ in range(RATE):
        args += ["-o", "/dev/null", URL]
    p = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
    out, _ = await p.communicate()
    codes = out.decode().split()
    for c in codes:
        if c == "200":
            counts[proto][0] += 1
        else:
            failed(proto, f"status {c}")
    for _ in range(RATE - len(codes)):
        failed(proto, f"curl exit {p.returncode}")


async def h2_batch():
    """RATE requests as concurrent streams of one HTTP/2 connection."""
    url = urlsplit(URL)
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(url.hostname, url.port), 5)
    except (OSError, asyncio.TimeoutError) as e:
        for _ in range(RATE):
            failed("http2", f"connect: {e!r}")
        return
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    status, done = {}, set()
    for _ in range(RATE):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "GET"), (":path", url.path or "/"),
                                (":scheme", "http"), (":authority", HOST)], end_stream=True)
        status[sid] = None
    w.write(conn.data_to_send())
    try:
        while len(done) < RATE:
            data = await asyncio.wait_for(r.read(65536), 5)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    status[ev.stream_id] = dict(ev.headers).get(b":status")
                elif isinstance(ev, h2.events.DataReceived):
                    conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                elif isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done.add(ev.stream_id)
            w.write(conn.data_to_send())
    except (OSError, asyncio.TimeoutError, h2.exceptions.ProtocolError) as e:
        print(f"{time.strftime('%H:%M:%S')} http2 connection: {e!r}", file=sys.stderr, flush=True)
    finally:
        w.close()
    for sid, code in status.items():
        if sid in done and code == b"200":
            counts["http2"][0] += 1
        else:
            failed("http2", f"stream {sid}: status {code}, ended {sid in done}")


async def tcp_once(payload):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", TCP_PORT), 5)
        w.write(payload)
        await w.drain()
        got = await asyncio.wait_for(r.readexactly(len(payload)), 5)
        w.close()
        if got == payload:
            counts["tcp"][0] += 1
        else:
            failed("tcp", "echo differs")
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
        failed("tcp", repr(e))


async def main():
    tasks = []
    start = time.monotonic()
    for second in range(SECONDS):
        # A first byte no HTTP request starts with: detection calls it opaque at once.
        payload = b"\x00soak" + os.urandom(1019)
        tasks.append(asyncio.create_task(curl_batch("http1", ["--http1.1"])))
        tasks.append(asyncio.create_task(h2_batch()))
        tasks += [asyncio.create_task(tcp_once(payload)) for _ in range(RATE)]
        await asyncio.sleep(max(0.0, start + second + 1 - time.monotonic()))
    await asyncio.gather(*tasks)
    for proto, (ok, bad) in counts.items():
        print(proto, ok, bad)


asyncio.run(main())
