#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-3-Clause
# A TCP proxy on 127.0.0.1 that adds latency: every byte a client sends
# reaches the server DELAY milliseconds later (a delay line, not a rate
# limit: bytes sent together keep arriving together), so each request
# of a kept-alive HTTP connection, and each new connection, takes DELAY
# more.  Replies pass as they come.  For scripts/bench-remote: the
# machine is shared, so no tc/netem on lo.
#
# usage: delay-proxy.py DELAY-MS TARGET-PORT PORT-FILE
# Listens on a free port, writes it to PORT-FILE, serves until killed.

import asyncio
import os
import sys

delay = int(sys.argv[1]) / 1000
target_port = int(sys.argv[2])
port_file = sys.argv[3]


async def pipe(reader, writer, lag):
    """Copy reader to writer, each chunk lag seconds after it came."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    async def send():
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()

    sender = asyncio.ensure_future(send())
    try:
        while True:
            data = await reader.read(1 << 18)
            queue.put_nowait((loop.time() + lag, data))
            if not data:
                break
        await sender
    except (ConnectionError, OSError):
        sender.cancel()
        writer.close()


async def handle(client_reader, client_writer):
    try:
        await asyncio.sleep(delay)      # the connection's handshake
        server_reader, server_writer = await asyncio.open_connection(
            "127.0.0.1", target_port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, server_writer, delay),
                         pipe(server_reader, client_writer, 0),
                         return_exceptions=True)


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    with open(port_file + ".tmp", "w") as f:
        f.write("%d\n" % server.sockets[0].getsockname()[1])
    os.rename(port_file + ".tmp", port_file)
    async with server:
        await server.serve_forever()

asyncio.run(main())
