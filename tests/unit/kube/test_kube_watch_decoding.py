"""A watch body is decoded into events whatever its chunking, skipping keep-alive blank lines."""

from __future__ import annotations

import json

import pytest

from climatik.kube.errors import UnavailableError
from climatik.kube.listwatch import decode_lines


def line(kind: str, name: str) -> bytes:
    return json.dumps({"type": kind, "object": {"metadata": {"name": name}}}).encode() + b"\n"


def names(chunks: list[bytes]) -> list[tuple[str, str]]:
    return [(e.type, e.object["metadata"]["name"]) for e in decode_lines(chunks)]


def test_events_split_across_chunks_are_reassembled() -> None:
    body = line("ADDED", "a") + line("MODIFIED", "b") + line("DELETED", "c")
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)]
    assert names(chunks) == [("ADDED", "a"), ("MODIFIED", "b"), ("DELETED", "c")]


def test_several_events_in_one_chunk_and_blank_lines_between_them() -> None:
    body = b"\n" + line("ADDED", "a") + b"\r\n  \n" + line("ADDED", "b") + b"\n\n"
    assert names([body]) == [("ADDED", "a"), ("ADDED", "b")]


def test_a_last_event_without_newline_is_not_lost() -> None:
    assert names([line("ADDED", "a").rstrip()]) == [("ADDED", "a")]


def test_an_empty_body_has_no_events() -> None:
    assert names([]) == []
    assert names([b"", b"\n"]) == []


@pytest.mark.parametrize("garbage", [b"{not json}\n", b'"a string"\n', b'{"type": "ADDED"}\n'])
def test_a_corrupt_line_ends_the_stream_with_a_retryable_error(garbage: bytes) -> None:
    with pytest.raises(UnavailableError):
        names([line("ADDED", "a"), garbage])
