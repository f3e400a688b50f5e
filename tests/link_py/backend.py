"""A ringgate link backend (docs/LINK.md, ringgate-link.v1) written in Python on the
`websockets` library, for tests/link_python.rs: it shows that a backend in another
language, on an ordinary WebSocket server library, can speak the link and drive the
push plane.

Run: python backend.py [--port N]   (N = 0, the default, picks a free port)

It prints `listening HOST:PORT` as its first line on stdout, then one JSON line per
thing it saw or did (`{"event": "link" | "open" | "closed" | "request" | "action", ...}`),
so the test can follow it. It exits when its stdin reaches end of file (the test that
started it is gone) or when it is killed.

Endpoint paths it answers (every other path: 404; meta requests: 404):
  /py/echo     REPLY 200 with the payload
  /py/watch    SUBSCRIBE the caller (its link session) to the topic "py.news", REPLY 200
  /py/unwatch  UNSUBSCRIBE the caller from "py.news", REPLY 200
  /py/shout    PUBLISH the payload to "py.news" with the key "shout", REPLY 200
  /py/promote  ROLES add "vip" for the caller's session id, REPLY 200
  /py/vip      REPLY 200 with {"session_id","account_id","roles"} as the latest OPEN
               of the caller said (an endpoint only the role "vip" may call)
  /py/kick     KICK the caller (its link session) with 4002 "kicked by python"; no reply
  /py/notify   PUSH the payload to the caller's account, REPLY 200
"""

import argparse
import asyncio
import json
import os
import struct
import sys
import threading

from websockets.asyncio.server import serve

SUBPROTOCOL = "ringgate-link.v1"
TOPIC = "py.news"

# ringgate -> backend
OPEN, REQUEST, CLOSED, CLIENT_ANSWER = 0x01, 0x02, 0x03, 0x04
# backend -> ringgate
REPLY, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PUSH, ROLES, KICK = (
    0x81, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89)
# addr kinds
ADDR_LINK, ADDR_SESSION_ID, ADDR_ACCOUNT = 0x01, 0x02, 0x03
META_FLAG = 0x80


def say(**fields):
    print(json.dumps(fields, sort_keys=True), flush=True)


class Reader:
    """Big-endian fields off one link message."""

    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, n):
        if self.at + n > len(self.data):
            raise ValueError(f"truncated message: needs {n} bytes at {self.at} of {len(self.data)}")
        out = self.data[self.at:self.at + n]
        self.at += n
        return out

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def text16(self):
        return self.take(self.u16()).decode("utf-8")

    def rest(self):
        out = self.data[self.at:]
        self.at = len(self.data)
        return out


def text16(s):
    b = s.encode("utf-8")
    return struct.pack(">H", len(b)) + b


def addr_link(session):
    return struct.pack(">BQ", ADDR_LINK, session)


def addr_session_id(sid):
    return bytes([ADDR_SESSION_ID]) + text16(sid)


def addr_account(account):
    return bytes([ADDR_ACCOUNT]) + text16(account)


def reply(call, status, payload=b""):
    return struct.pack(">BQH", REPLY, call, status) + payload


def publish(topic, key, payload, flags=0):
    return bytes([PUBLISH, flags]) + text16(topic) + text16(key) + payload


def subscribe(addr, topic, on=True):
    return bytes([SUBSCRIBE if on else UNSUBSCRIBE]) + addr + text16(topic)


def push(addr, payload, flags=0):
    return bytes([PUSH]) + addr + bytes([flags]) + payload


def roles(addr, add="", remove=""):
    return bytes([ROLES]) + addr + text16(add) + text16(remove)


def kick(addr, code, reason):
    return bytes([KICK]) + addr + struct.pack(">H", code) + reason.encode("utf-8")


async def serve_link(ws):
    """One link connection (one gateway shard). Sessions are per connection."""
    shard = ws.request.headers.get("X-Ringgate-Shard", "?")
    say(event="link", shard=shard, subprotocol=ws.subprotocol)
    sessions = {}  # link session -> {"session_id", "account_id", "roles"}
    try:
        async for msg in ws:
            if isinstance(msg, str):
                say(event="error", error="a text message on the link")
                continue
            for out in handle(msg, sessions, shard):
                await ws.send(out)
    except Exception as e:  # a link that breaks: the gateway redials
        say(event="error", error=f"{type(e).__name__}: {e}")
    say(event="link_closed", shard=shard)


def handle(msg, sessions, shard):
    """The actions answering one event, in the order they must go out."""
    r = Reader(msg)
    kind = r.u8()
    if kind == OPEN:
        session = r.u64()
        info = {"session_id": r.text16(), "account_id": r.text16(), "roles": r.text16()}
        sessions[session] = info
        say(event="open", shard=shard, session=session, **info)
        return []
    if kind == CLOSED:
        session = r.u64()
        sessions.pop(session, None)
        say(event="closed", shard=shard, session=session)
        return []
    if kind == CLIENT_ANSWER:
        return []  # this backend makes no client calls
    if kind != REQUEST:
        say(event="error", error=f"unknown event kind {kind:#04x}")
        return []
    session, call, _message_id, flags = r.u64(), r.u64(), r.u64(), r.u8()
    path = r.text16()
    payload = r.rest()
    say(event="request", shard=shard, session=session, call=call, flags=flags, path=path)
    if call == 0:
        return []  # an event: no reply
    if flags & META_FLAG:
        return [reply(call, 404)]
    me = sessions.get(session)
    if me is None:
        say(event="error", error=f"a request of session {session} before its OPEN")
        return [reply(call, 500)]

    def did(action, out):
        say(event="action", action=action, session=session)
        return out

    if path == "/py/echo":
        return [reply(call, 200, payload)]
    if path == "/py/watch":
        return [did("subscribe", subscribe(addr_link(session), TOPIC)),
                reply(call, 200, json.dumps({"watching": TOPIC}).encode())]
    if path == "/py/unwatch":
        return [did("unsubscribe", subscribe(addr_link(session), TOPIC, on=False)),
                reply(call, 200)]
    if path == "/py/shout":
        return [did("publish", publish(TOPIC, "shout", payload)), reply(call, 200)]
    if path == "/py/promote":
        return [did("roles", roles(addr_session_id(me["session_id"]), add="vip")),
                reply(call, 200)]
    if path == "/py/vip":
        return [reply(call, 200, json.dumps(me, sort_keys=True).encode())]
    if path == "/py/kick":
        return [did("kick", kick(addr_link(session), 4002, "kicked by python"))]
    if path == "/py/notify":
        if not me["account_id"]:
            return [reply(call, 400)]
        return [did("push", push(addr_account(me["account_id"]), payload)), reply(call, 200)]
    return [reply(call, 404)]


def exit_when_stdin_closes():
    try:
        while sys.stdin.buffer.read(4096):
            pass
    finally:
        os._exit(0)


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    async with serve(serve_link, args.host, args.port, subprotocols=[SUBPROTOCOL],
                     compression=None) as server:
        host, port = server.sockets[0].getsockname()[:2]
        print(f"listening {host}:{port}", flush=True)
        await asyncio.get_running_loop().create_future()


if __name__ == "__main__":
    asyncio.run(main())
