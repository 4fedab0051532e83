#!/usr/bin/python3
"""A OneBot v11 reverse-WS target on the Python websockets library (the
library under NoneBot2's websockets driver and many home-made bots), for
obmux's interop tests. Written for websockets 10.4 (Debian bookworm's
python3-websockets); run it with the system Python, /usr/bin/python3.

It listens on 127.0.0.1, keeps websockets' own keepalive on (ping_interval,
ping_timeout), and reports on stdout, one JSON object a line:

  {"kind": "listening", "port": N}
  {"kind": "connected", "path": ..., "x_self_id": ..., "first": <first frame>}
  {"kind": "ping_in"} / {"kind": "pong_out"}    a ping from obmux, and our pong
  {"kind": "ping_out"} / {"kind": "pong_in"}    our keepalive ping, and a pong
  {"kind": "keepalive_pong"}                    websockets matched a pong to its keepalive ping
  {"kind": "keepalive_timeout"}                 websockets gave up waiting for one
  {"kind": "frame", "frame": ...}               a data frame after the first
  {"kind": "stalling", "seconds": S}            --mode stall: the event loop is blocked from now
  {"kind": "closed", "code": C, "reason": R}

The frame reports come from websockets' own debug log, so they show what the
library did, not what this script meant to do.

--mode answer: read everything (websockets answers pings in its reader).
--mode stall: after the first frame, block the event loop with time.sleep:
websockets then neither reads nor answers pings, as a bot stuck in a
blocking call would; obmux must notice by its ping timeout.
"""

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time

import websockets
from websockets.frames import Opcode


def report(**fields):
    print(json.dumps(fields), flush=True)


class FrameLog(logging.Handler):
    """Turns websockets' debug log into reports."""

    def emit(self, record):
        msg = record.msg
        if msg in ("< %s", "> %s") and record.args:
            opcode = getattr(record.args[0], "opcode", None)
            names = {
                ("< %s", Opcode.PING): "ping_in",
                ("> %s", Opcode.PONG): "pong_out",
                ("> %s", Opcode.PING): "ping_out",
                ("< %s", Opcode.PONG): "pong_in",
            }
            name = names.get((msg, opcode))
            if name:
                report(kind=name)
        elif msg == "% received keepalive pong":
            report(kind="keepalive_pong")
        elif msg == "! timed out waiting for keepalive pong":
            report(kind="keepalive_timeout")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--ping-timeout", type=float, default=20.0)
    parser.add_argument("--mode", choices=["answer", "stall"], default="answer")
    parser.add_argument("--stall", type=float, default=60.0, help="seconds to block the event loop in --mode stall")
    args = parser.parse_args()

    # SIGTERM ends the script at once, even while the event loop is blocked.
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    log = logging.getLogger("websockets")
    log.setLevel(logging.DEBUG)
    log.addHandler(FrameLog())
    log.propagate = False

    async def handler(ws):
        first = await ws.recv()
        try:
            first = json.loads(first)
        except ValueError:
            pass
        report(kind="connected", path=ws.path, x_self_id=ws.request_headers.get("X-Self-ID"),
               user_agent=ws.request_headers.get("User-Agent"), first=first)
        if args.mode == "stall":
            report(kind="stalling", seconds=args.stall)
            time.sleep(args.stall)  # blocks the loop: no reads, no pongs
        try:
            async for message in ws:
                try:
                    message = json.loads(message)
                except ValueError:
                    pass
                report(kind="frame", frame=message)
        except websockets.ConnectionClosed:
            pass
        report(kind="closed", code=ws.close_code, reason=ws.close_reason)

    async def serve():
        async with websockets.serve(handler, "127.0.0.1", args.port,
                                    ping_interval=args.ping_interval,
                                    ping_timeout=args.ping_timeout) as server:
            report(kind="listening", port=server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
