"""The worker's output framing, fed in arbitrary pieces as pipes deliver it."""

from __future__ import annotations

from poke_tune.sim.frames import FrameReader, encode_command


def _frame(battle_id: int, payload: str) -> bytes:
    data = payload.encode()
    return f"{battle_id} {len(data)}\n".encode() + data


def test_frames_survive_any_split_of_the_byte_stream() -> None:
    payloads = [(3, "update\n|turn|1\n\n12 7\n"), (12, "sideupdate\np1\n|request|{}"), (3, "é 中")]
    stream = b"".join(_frame(i, p) for i, p in payloads)
    for piece in (1, 2, 5, 64, len(stream)):
        reader = FrameReader()
        frames = []
        for at in range(0, len(stream), piece):
            frames += reader.feed(stream[at : at + piece])
        assert frames == payloads
        assert reader.pending == 0


def test_commands_are_one_line_per_battle() -> None:
    line = encode_command(7, [">start {}", ">player p1 {}"])
    assert line == b"7\t>start {}\x0c>player p1 {}\n"
