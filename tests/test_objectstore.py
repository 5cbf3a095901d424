"""The S3-compatible object store under `run --durable`: what the broker's S3 client needs
(conditional writes, ranges, ListObjectsV2 with pages), objects on disk, hostile keys refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from xml.etree import ElementTree

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from streams.broker import free_port
from streams.objectstore import MAX_KEYS, ObjectStore, create_app

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@asynccontextmanager
async def serve(root: Path) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    runner = web.AppRunner(create_app(ObjectStore(root)))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as session:
            yield session, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def run(coro) -> None:
    asyncio.run(coro)


def _keys(xml: str) -> tuple[list[str], list[str], str | None]:
    doc = ElementTree.fromstring(xml)
    keys = [e.findtext(f"{NS}Key") for e in doc.iter(f"{NS}Contents")]
    prefixes = [e.findtext(f"{NS}Prefix") for e in doc.iter(f"{NS}CommonPrefixes")]
    return keys, prefixes, doc.findtext(f"{NS}NextContinuationToken")


def test_put_get_head_delete_and_files_on_disk(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path) as (s, url):
            r = await s.put(f"{url}/tansu/a/b/obj.batch", data=b"hello world")
            assert r.status == 200 and r.headers["ETag"]
            r = await s.get(f"{url}/tansu/a/b/obj.batch")
            assert r.status == 200 and await r.read() == b"hello world"
            r = await s.get(f"{url}/tansu/a/b/obj.batch", headers={"Range": "bytes=6-"})
            assert r.status == 206 and await r.read() == b"world"
            r = await s.get(f"{url}/tansu/a/b/obj.batch", headers={"Range": "bytes=-5"})
            assert await r.read() == b"world"
            r = await s.get(f"{url}/tansu/a/b/obj.batch", headers={"Range": "bytes=99-"})
            assert r.status == 416
            r = await s.head(f"{url}/tansu/a/b/obj.batch")
            assert r.status == 200 and r.headers["Content-Length"] == "11"
            assert (tmp_path / "tansu" / "a" / "b" / "obj.batch").read_bytes() == b"hello world"
            assert (await s.delete(f"{url}/tansu/a/b/obj.batch")).status == 204
            assert (await s.delete(f"{url}/tansu/a/b/obj.batch")).status == 204  # idempotent
            r = await s.get(f"{url}/tansu/a/b/obj.batch")
            assert r.status == 404 and "NoSuchKey" in await r.text()

    run(main())


def test_conditional_writes_are_what_keeps_metadata_consistent(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path) as (s, url):
            meta = f"{url}/tansu/clusters/c/meta.json"
            create = {"If-None-Match": "*"}
            first = await s.put(meta, data=b"{}", headers=create)
            assert first.status == 200
            assert (await s.put(meta, data=b"{1}", headers=create)).status == 412
            etag = first.headers["ETag"]
            second = await s.put(meta, data=b"{2}", headers={"If-Match": etag})
            assert second.status == 200 and second.headers["ETag"] != etag
            # a writer holding the old version loses, and nothing changes
            assert (await s.put(meta, data=b"{3}", headers={"If-Match": etag})).status == 412
            assert await (await s.get(meta)).read() == b"{2}"
            missing = f"{url}/tansu/clusters/c/none.json"
            assert (await s.put(missing, data=b"x", headers={"If-Match": etag})).status == 412
            r = await s.get(meta, headers={"If-Match": etag})
            assert r.status == 412

    run(main())


def test_list_objects_v2_with_prefix_delimiter_and_pages(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path) as (s, url):
            names = [f"t/p0/records/{i:020d}.batch" for i in range(MAX_KEYS + 5)]
            for name in names:
                (tmp_path / "tansu" / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / "tansu" / name).write_bytes(b"x")
            await s.put(f"{url}/tansu/t/p0/watermark.json", data=b"{}")
            await s.put(f"{url}/tansu/t/p1/watermark.json", data=b"{}")
            prefix = "t/p0/records/"
            r = await s.get(f"{url}/tansu", params={"list-type": "2", "prefix": prefix})
            keys, _, token = _keys(await r.text())
            assert keys == names[:MAX_KEYS] and token
            r = await s.get(
                f"{url}/tansu",
                params={"list-type": "2", "prefix": prefix, "continuation-token": token},
            )
            more, _, end = _keys(await r.text())
            assert more == names[MAX_KEYS:] and end is None
            r = await s.get(
                f"{url}/tansu", params={"list-type": "2", "prefix": "t/", "delimiter": "/"}
            )
            assert _keys(await r.text())[1] == ["t/p0/", "t/p1/"]
            r = await s.get(
                f"{url}/tansu",
                params={"list-type": "2", "prefix": "t/p", "start-after": "t/p0/watermark.json"},
            )
            assert _keys(await r.text())[0] == ["t/p1/watermark.json"]
            r = await s.get(f"{url}/tansu", params={"list-type": "2", "prefix": "nothing/"})
            assert _keys(await r.text()) == ([], [], None)
            r = await s.get(f"{url}/tansu", params={"list-type": "2", "max-keys": "many"})
            assert r.status == 400

    run(main())


@pytest.mark.parametrize(
    "key",
    ["../escape", "a/../../escape", "a/./b", "a%00b", "/abs", ".tmp-1-x", "a//b", "dir/"],
)
def test_keys_that_leave_the_root_are_refused(tmp_path: Path, key: str) -> None:
    async def main() -> None:
        async with serve(tmp_path / "root") as (s, url):
            raw = URL(f"{url}/tansu/{key}", encoded=True)  # sent as is, not normalised
            r = await s.put(raw, data=b"x")
            assert r.status == 400, await r.text()
            assert not (tmp_path / "escape").exists()

    run(main())


def test_odd_but_valid_keys_and_unsupported_requests(tmp_path: Path) -> None:
    async def main() -> None:
        async with serve(tmp_path) as (s, url):
            odd = "topics/Café ☕/\u202epart/ünïcode.batch"
            assert (await s.put(f"{url}/tansu/{odd}", data=b"1")).status == 200
            assert await (await s.get(f"{url}/tansu/{odd}")).read() == b"1"
            r = await s.get(f"{url}/tansu", params={"list-type": "2", "prefix": "topics/"})
            assert _keys(await r.text())[0] == [odd]
            r = await s.post(f"{url}/tansu/big", params={"uploads": ""})
            assert r.status == 501
            r = await s.put(f"{url}/tansu/copy", headers={"x-amz-copy-source": "/tansu/big"})
            assert r.status == 501
            assert (await s.put(f"{url}/BAD_BUCKET/x", data=b"x")).status == 400
            assert (await s.get(f"{url}/tansu")).status == 400  # ListObjects v1

    run(main())
