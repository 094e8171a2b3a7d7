"""The client's delivery marks on the fast path: one small file, one write each.

For every uplink stream the client keeps two marks here:

- ``safe``: the last unit acknowledged by the HES's TCP (units that went
  through the spool have their mark in the spool's own transaction);
- ``sent``: the last unit handed to the connection, written *before* it is.

A restarted client takes in again what its owner resends after ``safe``;
units up to ``sent`` among them may already be at the HES (the client died
between the HES's acknowledgement and writing ``safe``). Those are the only
repeats the design allows, and they are counted because ``sent`` says which.

The file is rewritten whole with a single ``pwrite`` at offset 0 (a length,
a CRC-32, a msgpack map), so a killed process leaves the last complete
version in the page cache; a torn one (a power cut) fails its CRC and is
ignored, falling back to the spool's marks. Created 0600. No sockets, no
threads.
"""

from __future__ import annotations

import os
import struct
import zlib

import msgpack

_HEAD = struct.Struct(">II")  # length, crc32
Marks = dict[tuple[str, int], int]


class MarkFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.fchmod(self.fd, 0o600)

    def load(self) -> tuple[Marks, Marks, int]:
        """``(safe, sent, spool_sent)`` as last written whole; empty if none or torn.

        ``spool_sent`` is the highest spool id handed to the connection: spooled
        payloads up to it may be at the HES already when they are sent again.
        """
        data = os.pread(self.fd, 1 << 20, 0)
        if len(data) < _HEAD.size:
            return {}, {}, 0
        length, crc = _HEAD.unpack_from(data)
        body = data[_HEAD.size : _HEAD.size + length]
        if len(body) != length or zlib.crc32(body) != crc:
            return {}, {}, 0
        try:
            obj = msgpack.unpackb(body, raw=False, strict_map_key=False)
            safe = {(str(s), int(i)): int(n) for s, i, n in obj["safe"]}
            sent = {(str(s), int(i)): int(n) for s, i, n in obj["sent"]}
            spool_sent = int(obj["spool_sent"])
        except (ValueError, TypeError, KeyError, msgpack.UnpackException):
            return {}, {}, 0
        return safe, sent, spool_sent

    def write(self, safe: Marks, sent: Marks, spool_sent: int) -> None:
        body = msgpack.packb(
            {
                "safe": [[s, i, n] for (s, i), n in safe.items()],
                "sent": [[s, i, n] for (s, i), n in sent.items()],
                "spool_sent": spool_sent,
            }
        )
        os.pwrite(self.fd, _HEAD.pack(len(body), zlib.crc32(body)) + body, 0)

    def close(self) -> None:
        os.close(self.fd)
