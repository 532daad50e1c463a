"""The soak run's application: one port that answers HTTP/1.1 and HTTP/2 (prior knowledge)
with "ok", and echoes any other byte stream (the opaque TCP traffic), as the proxy forwards
all three to the one address it is given. Needs the `h2` package (pip install h2)."""
import asyncio
import sys

import h2.config
import h2.connection
import h2.events

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


async def http1(first, reader, writer):
    buf = first
    while True:
        while b"\r\n\r\n" not in buf:
            more = await reader.read(65536)
            if not more:
                return
            buf += more
        head, buf = buf.split(b"\r\n\r\n", 1)
        # The load generator sends no bodies; a Content-Length would be read here.
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")
        await writer.drain()


async def http2(first, reader, writer):
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    conn.initiate_connection()
    data = first
    while True:
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.RequestReceived):
                conn.send_headers(event.stream_id, [(":status", "200"), ("content-length", "2")])
                conn.send_data(event.stream_id, b"ok", end_stream=True)
        writer.write(conn.data_to_send())
        await writer.drain()
        data = await reader.read(65536)
        if not data:
            return


async def echo(first, reader, writer):
    data = first
    while data:
        writer.write(data)
        await writer.drain()
        data = await reader.read(65536)


async def serve(reader, writer):
    try:
        first = await reader.read(65536)
        if first.startswith(PREFACE[: len(first)]) and first:
            while len(first) < len(PREFACE) and first == PREFACE[: len(first)]:
                more = await reader.read(65536)
                if not more:
                    return
                first += more
        if first.startswith(PREFACE):
            await http2(first, reader, writer)
        elif first[:1].isalpha():
            await http1(first, reader, writer)
        else:
            await echo(first, reader, writer)
    except (ConnectionError, h2.exceptions.ProtocolError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await asyncio.start_server(serve, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


asyncio.run(main(int(sys.argv[1])))
