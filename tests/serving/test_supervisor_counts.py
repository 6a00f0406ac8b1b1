"""The supervisor counts each server's answers from the bytes it forwards: one per
HTTP/1.1 response, its status and length followed across reads, kept-alive
connections included; a response it cannot follow ends the counting, never a miscount."""

from __future__ import annotations

from modelrail.localcloud.supervisor import Counts, _Responses


def _answer(status: int, body: bytes = b"{}") -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\ncontent-length: {len(body)}\r\n"
        "content-type: application/json\r\n\r\n"
    ).encode() + body


def test_responses_on_a_kept_alive_connection_are_each_counted_across_reads() -> None:
    counts = Counts()
    responses = _Responses(counts)
    stream = _answer(200, b'{"a": 1}') + _answer(500, b"x" * 70000) + _answer(404)
    responses.request()
    for start in range(0, len(stream), 7):  # arbitrary read boundaries
        responses.feed(stream[start : start + 7])

    described = counts.describe()
    assert (described["requests"], described["errors"]) == (3, 1)
    assert described["p99_ms"] is not None


def test_a_chunked_answer_ends_the_counting_of_its_connection() -> None:
    counts = Counts()
    responses = _Responses(counts)
    responses.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nHTTP/\r\n0\r\n\r\n")
    responses.feed(_answer(500))

    assert (counts.requests, counts.errors) == (1, 0)


def test_an_interim_100_continue_is_not_an_answer() -> None:
    counts = Counts()
    _Responses(counts).feed(b"HTTP/1.1 100 Continue\r\n\r\n" + _answer(503))

    assert (counts.requests, counts.errors) == (1, 1)
