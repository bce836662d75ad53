"""The byte framing between Python and the node worker (`js/worker.js`).

Python -> worker, one line per command: `<battle id>\\t<protocol lines joined by \\f>\\n`.
Worker -> Python, one frame per stream chunk: `<battle id> <payload bytes>\\n<payload>`.

The payload is the `BattleStream` chunk as is (UTF-8): a length prefix needs no escaping,
so neither side pays to JSON-encode or decode the battle log and the request JSON
inside it (the request is parsed once, by the battle that needs it).
"""

from __future__ import annotations

__all__ = ["FrameReader", "encode_command"]


def encode_command(battle_id: int, commands: list[str]) -> bytes:
    """One input line for the worker: `commands` (protocol lines) for battle `battle_id`."""
    return f"{battle_id}\t{chr(12).join(commands)}\n".encode()


class FrameReader:
    """Reassembles complete `(battle id, chunk)` frames from a worker's stdout bytes."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, str]]:
        """Add bytes read from the worker; returns every frame they complete, in order."""
        buffer = self._buffer
        buffer += data
        frames: list[tuple[int, str]] = []
        position = 0
        while True:
            header_end = buffer.find(b"\n", position)
            if header_end < 0:
                break
            battle_id, size = buffer[position:header_end].split(b" ")
            start = header_end + 1
            end = start + int(size)
            if end > len(buffer):
                break  # the payload's tail is still in the pipe
            frames.append((int(battle_id), buffer[start:end].decode()))
            position = end
        del buffer[:position]
        return frames

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a complete frame."""
        return len(self._buffer)
