"""One SIP port served by several processes: every dialog has one owner, chosen by its Call-ID.

With ``voicegate serve --workers N`` each worker binds the SIP UDP port itself (SO_REUSEPORT).
The kernel picks the receiving socket by the datagram's addresses, so everything one trunk
sends (one source address and port) reaches the same worker, whatever the call. A dialog lives
in one process (its state, its Call, its RTP port), so the receiving worker hands a message it
does not own to the owner: ``owner_of(call_id, count)`` (CRC-32 of the Call-ID: the same in
every process, unlike ``hash()``), over a Unix datagram socket per worker, with the sender's
address in front (``encode_forward``/``decode_forward``). The owner answers from its own socket
on the same port, so the peer sees one address; RTP flows straight between the peer and the
owner's RTP port. Signalling is a few messages per call; the per-packet media work, the part
that costs, is spread over the workers.

TCP connections are not handed over: the worker that accepted one (worker 0 holds the TCP
listener) runs every dialog that arrives on it.

Owns: SipShard, owner_of, encode_forward, decode_forward. No asyncio; pure functions and sockets.
"""

from __future__ import annotations

import socket
import zlib
from dataclasses import dataclass

from voicegate.errors import SipParseError
from voicegate.legs.sip.message import MAX_MESSAGE_BYTES

__all__ = ["SipShard", "decode_forward", "encode_forward", "owner_of"]

MAX_FORWARD_HEAD = 64  # "VGF1 host port\n": an IPv6 address, a port, separators
# only parsed messages (at most MAX_MESSAGE_BYTES) are handed over
FORWARD_BUFFER = MAX_MESSAGE_BYTES + MAX_FORWARD_HEAD
_FORWARD_MAGIC = b"VGF1 "


def owner_of(call_id: str, count: int) -> int:
    """The worker (0..count-1) that runs the dialog of ``call_id``."""
    if count <= 1:
        return 0
    return zlib.crc32(call_id.encode("utf-8", "surrogateescape")) % count


def encode_forward(host: str, port: int, data: bytes) -> bytes:
    """A SIP datagram from ``host:port`` as one message to the owning worker."""
    return b"%s%s %d\n%s" % (_FORWARD_MAGIC, host.encode("ascii"), port, data)


def decode_forward(message: bytes) -> tuple[str, int, bytes]:
    """``(host, port, data)`` of an ``encode_forward`` message; ``SipParseError`` otherwise."""
    if not message.startswith(_FORWARD_MAGIC):
        raise SipParseError("forwarded SIP message: bad magic")
    end = message.find(b"\n", 0, MAX_FORWARD_HEAD)
    if end < 0:
        raise SipParseError("forwarded SIP message: no address line")
    head = message[len(_FORWARD_MAGIC) : end].split(b" ")
    if len(head) != 2 or not head[0] or not head[1].isdigit():
        raise SipParseError("forwarded SIP message: bad address line")
    port = int(head[1])
    if port > 65535:
        raise SipParseError("forwarded SIP message: bad port")
    try:
        host = head[0].decode("ascii")
    except UnicodeDecodeError as exc:
        raise SipParseError("forwarded SIP message: bad host") from exc
    return host, port, message[end + 1 :]


@dataclass(slots=True)
class SipShard:
    """This process's share of the SIP port (descriptors inherited from ``voicegate serve``).

    ``udp``: this worker's socket on the SIP port (SO_REUSEPORT, bound); ``tcp``: the TCP
    listener (one worker only; None elsewhere); ``inbox``: where the others hand this worker
    its messages; ``outboxes[k]``: the socket that reaches worker k's inbox (None for this one).
    """

    index: int
    count: int
    udp: socket.socket
    inbox: socket.socket
    outboxes: list[socket.socket | None]
    tcp: socket.socket | None = None

    def owner(self, call_id: str) -> int:
        return owner_of(call_id, self.count)

    def forward(self, owner: int, host: str, port: int, data: bytes) -> bool:
        """Hand a datagram to its owner. False when its inbox is full: the datagram is dropped,
        as the network may drop it, and the sender retransmits (RFC 3261 17)."""
        out = self.outboxes[owner]
        if out is None:
            raise ValueError(f"worker {owner} is this one")
        try:
            out.send(encode_forward(host, port, data))
        except OSError:  # BlockingIOError: the inbox is full (its worker stalled or restarting)
            return False
        return True

    def receive(self, limit: int) -> list[bytes]:
        """Up to ``limit`` messages waiting in this worker's inbox (never blocks)."""
        out: list[bytes] = []
        while len(out) < limit:
            try:
                out.append(self.inbox.recv(FORWARD_BUFFER))
            except (BlockingIOError, InterruptedError):
                break
        return out

    def close(self) -> None:
        for sock in (self.udp, self.inbox, self.tcp, *self.outboxes):
            if sock is not None:
                sock.close()
