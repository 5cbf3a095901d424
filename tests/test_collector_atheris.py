"""Coverage-guided fuzzing (atheris/libFuzzer) of the collector's request decoding.

The target is the pure path a request body takes: inflate (identity/gzip/deflate, bounded),
parse JSON, take the body write key, check the shape and encode the calls. Any exception other
than a `Problem` (the collector's 4xx/413 answer) is a crash. The pytest test runs a bounded
number of inputs in a child process (libFuzzer exits the process when done); run longer with

    python tests/test_collector_atheris.py -runs=1000000 -max_len=4096

atheris is optional (pip install atheris): without it the test is skipped.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ROUTE_TYPES = ("batch", "track", "page", "screen", "identify", "group", "alias")
ENCODINGS = ("identity", "gzip", "deflate")
LIMIT = 32 * 1024


def one_input(data: bytes) -> None:
    """libFuzzer target: first byte picks the route and encoding, the rest is the body."""
    import orjson

    from streams.collector.http import Problem, encode_calls, inflate, take_write_key
    from streams.collector.http import _parse_json as parse_json

    if not data:
        return
    selector, body = data[0], data[1:]
    call_type = ROUTE_TYPES[selector % len(ROUTE_TYPES)]
    encoding = ENCODINGS[(selector // len(ROUTE_TYPES)) % len(ENCODINGS)]
    try:
        raw = inflate(body, encoding, LIMIT)
        payload = parse_json(raw)
        take_write_key(payload)
        encoded = encode_calls(payload, call_type, LIMIT)
    except Problem as problem:
        assert 400 <= problem.status < 500 and problem.message
        return
    for _key, body_json in encoded:  # what is accepted is JSON objects under the limit
        assert len(body_json) <= LIMIT
        assert isinstance(orjson.loads(body_json), dict)


JSON_TOKENS = ['{', '}', '[', ']', ':', ',', '"', '\\u0000', 'null', 'true', '1e400', '-0',
               '"batch"', '"type"', '"track"', '"page"', '"identify"', '"writeKey"', '"context"',
               '"integrations"', '"event"', '"anonymousId"', '"userId"', '"messageId"']  # fmt: skip


def _seeds() -> list[bytes]:
    import gzip
    import zlib

    batch = b'{"batch": [{"type": "track", "event": "E", "writeKey": "k"}], "context": {"a": 1}}'
    single = b'{"event": "E", "type": "track", "properties": {"x": [1, 2.5, null]}}'
    gzip_batch = bytes([len(ROUTE_TYPES) * 1]) + gzip.compress(batch)
    deflate_single = bytes([len(ROUTE_TYPES) * 2 + 1]) + zlib.compress(single)
    return [b"\x00" + batch, b"\x01" + single, gzip_batch, deflate_single]


def _dict_line(token: str) -> str:
    """One libFuzzer dictionary entry: the token in double quotes, escaped."""
    escaped = "".join(f"\\x{ord(c):02x}" if c in '"\\' or not c.isprintable() else c for c in token)
    return f'"{escaped}"\n'


def test_atheris_finds_no_crash_in_request_decoding(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(_seeds()):
        (corpus / f"seed{i}").write_bytes(seed)
    tokens = tmp_path / "json.dict"
    tokens.write_text("".join(_dict_line(t) for t in JSON_TOKENS))
    runs = 30000
    proc = subprocess.run(
        [sys.executable, __file__, f"-runs={runs}", "-max_len=2048", "-seed=1",
         f"-dict={tokens}", str(corpus)],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Done {runs} runs" in proc.stderr


if __name__ == "__main__":
    import atheris

    sys.path.insert(0, str(ROOT))
    import aiohttp.web  # noqa: F401  (libraries are imported uninstrumented: only our code)
    import orjson  # noqa: F401
    import prometheus_client  # noqa: F401
    import yaml  # noqa: F401

    with atheris.instrument_imports():
        import streams.collector.http
        import streams.envelope  # noqa: F401
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()
