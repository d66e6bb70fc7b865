"""S3 (and any S3-compatible server) as a store, through an injected boto3 client."""
from __future__ import annotations

import threading
from typing import Any, Dict, Iterator, List, Optional

from ..config import TransferConfig
from ..errors import AccessDenied, NotFound, ObjectChanged, StorageError, TransferFailed
from ..location import Location
from .base import ObjectInfo, Store, Upload

# Wire names of the checksums S3 reports, by genostage's algorithm names.
WIRE = {"crc64nvme": "CRC64NVME", "crc32c": "CRC32C", "crc32": "CRC32", "sha256": "SHA256", "sha1": "SHA1"}

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchVersion", "NoSuchUpload"}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId",
           "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AccountProblem"}
_CHANGED = {"PreconditionFailed", "412"}


def make_client(config: Optional[TransferConfig] = None) -> Any:
    """A boto3 S3 client sized for ``config.concurrency``, pointed at ``config.endpoint_url``.

    botocore retries transient errors (5xx, throttling, connection errors) with
    backoff; request/response checksums are left to genostage, which computes its
    own, so S3-compatible servers without the newest checksum headers work.
    """
    import boto3
    from botocore.config import Config

    config = config or TransferConfig()
    s3_opts: Dict[str, Any] = {}
    if config.endpoint_url:
        s3_opts["addressing_style"] = "path"
    bcfg = Config(
        max_pool_connections=config.concurrency + 4,
        retries={"mode": "standard", "max_attempts": config.max_attempts},
        connect_timeout=config.connect_timeout,
        read_timeout=config.read_timeout,
        s3=s3_opts,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        tcp_keepalive=True,
    )
    session = boto3.session.Session()
    region = config.region or session.region_name or "us-east-1"
    return session.client("s3", endpoint_url=config.endpoint_url, region_name=region, config=bcfg)


def translate(exc: BaseException, what: str) -> StorageError:
    """Turn a botocore error into a genostage one with a clear message."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return NotFound(f"{what}: bucket does not exist")
        if code in _NOT_FOUND or status == 404:
            return NotFound(f"{what} does not exist")
        if code in _DENIED or status == 403:
            return AccessDenied(f"{what}: access denied ({code or status})")
        if code in _CHANGED or status == 412:
            return ObjectChanged(f"{what} changed while it was being read (ETag no longer matches)")
        return TransferFailed(f"{what}: {code or status}: {err.get('Message', '')}".rstrip(": "))
    if isinstance(exc, BotoCoreError):
        return TransferFailed(f"{what}: {exc}")
    return TransferFailed(f"{what}: {exc.__class__.__name__}: {exc}")


def _etag(value: Optional[str]) -> Optional[str]:
    """ETags without their quotes (servers differ on quoting in listings)."""
    return value.strip('"') if value else None


class S3Upload(Upload):
    def __init__(self, store: "S3Store", loc: Location, upload_id: str, algorithm: Optional[str]) -> None:
        self._store = store
        self._loc = loc
        self.upload_id = upload_id
        self._algorithm = algorithm
        self._parts: Dict[int, Dict[str, Any]] = {}
        self._lock = threading.Lock()

    def write_part(self, number: int, offset: int, data: "bytes | memoryview",
                   checksums: Optional[Dict[str, str]] = None) -> None:
        args = self._store._args(self._loc)
        args.update(UploadId=self.upload_id, PartNumber=number, Body=bytes(data))
        if self._store._sse_c_args:
            args.update(self._store._sse_c_args)
        try:
            resp = self._store.client.upload_part(**args)
        except Exception as exc:
            raise translate(exc, f"{self._loc} (part {number})") from None
        self._store.counters.add(requests=1, written=len(data))
        with self._lock:
            self._parts[number] = {"PartNumber": number, "ETag": resp["ETag"]}

    def complete(self, checksums: Optional[Dict[str, str]] = None) -> ObjectInfo:
        parts = [self._parts[n] for n in sorted(self._parts)]
        args = self._store._args(self._loc)
        args.update(UploadId=self.upload_id, MultipartUpload={"Parts": parts})
        if checksums and self._algorithm and self._algorithm in checksums:
            args[f"Checksum{WIRE[self._algorithm]}"] = checksums[self._algorithm]
            args["ChecksumType"] = "FULL_OBJECT"
        try:
            self._store.client.complete_multipart_upload(**args)
        except Exception as exc:
            raise translate(exc, str(self._loc)) from None
        self._store.counters.add(requests=1)
        return self._store.stat(self._loc)

    def abort(self) -> None:
        args = self._store._args(self._loc)
        try:
            self._store.client.abort_multipart_upload(UploadId=self.upload_id, **args)
        except Exception:  # best effort: the upload may already be gone
            pass


class S3Store(Store):
    """An S3 bucket space reached through one boto3 client (thread-safe)."""

    def __init__(self, client: Any = None, config: Optional[TransferConfig] = None) -> None:
        super().__init__()
        self.config = config or TransferConfig()
        self.client = client if client is not None else make_client(self.config)
        self._sse_c_args: Dict[str, str] = {}
        # Whether the server accepted full-object checksums on multipart uploads;
        # None until tried.
        self._full_object_ok: Optional[bool] = None

    # -- helpers -------------------------------------------------------------
    def _args(self, loc: Location) -> Dict[str, Any]:
        args: Dict[str, Any] = {"Bucket": loc.bucket, "Key": loc.key}
        if self.config.requester_pays:
            args["RequestPayer"] = "requester"
        return args

    def _read_args(self, loc: Location, etag: Optional[str]) -> Dict[str, Any]:
        args = self._args(loc)
        if loc.version_id:
            args["VersionId"] = loc.version_id
        if etag:
            args["IfMatch"] = f'"{etag}"' 
        return args

    def _write_args(self, loc: Location) -> Dict[str, Any]:
        args = self._args(loc)
        if self.config.sse:
            args["ServerSideEncryption"] = self.config.sse
        if self.config.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.config.sse_kms_key_id
        return args

    # -- reads ---------------------------------------------------------------
    def stat(self, loc: Location, checksums: bool = True) -> ObjectInfo:
        if loc.key == "" or loc.key.endswith("/"):
            raise NotFound(f"{loc} is a prefix, not an object")
        args = self._read_args(loc, None)
        if checksums:
            args["ChecksumMode"] = "ENABLED"
        try:
            resp = self.client.head_object(**args)
        except Exception as exc:
            err = translate(exc, str(loc))
            if isinstance(err, NotFound):
                self._check_bucket(loc)
            raise err from None
        self.counters.add(requests=1)
        return self._info(loc, resp, "")

    def _check_bucket(self, loc: Location) -> None:
        """Tell a missing bucket apart from a missing key (HEAD gives both as 404)."""
        try:
            self.client.head_bucket(Bucket=loc.bucket)
        except Exception as exc:
            err = translate(exc, f"s3://{loc.bucket}")
            if isinstance(err, NotFound):
                raise NotFound(f"{loc}: bucket {loc.bucket!r} does not exist") from None

    def _info(self, loc: Location, resp: Dict[str, Any], relative: str) -> ObjectInfo:
        sums = {name: resp[f"Checksum{wire}"] for name, wire in WIRE.items() if resp.get(f"Checksum{wire}")}
        mtime = resp.get("LastModified")
        return ObjectInfo(
            location=Location("s3", loc.bucket, loc.key, version_id=loc.version_id),
            size=int(resp.get("ContentLength", resp.get("Size", 0))),
            etag=_etag(resp.get("ETag")),
            version_id=resp.get("VersionId"),
            mtime=mtime.timestamp() if mtime is not None else None,
            relative=relative,
            checksums=sums,
            checksum_type=resp.get("ChecksumType"),
            parts_count=resp.get("PartsCount"),
            sse=resp.get("ServerSideEncryption"),
        )

    def list(self, prefix: Location) -> Iterator[ObjectInfo]:
        base = prefix.key if (prefix.key == "" or prefix.key.endswith("/")) else prefix.key + "/"
        kwargs: Dict[str, Any] = {"Bucket": prefix.bucket, "Prefix": base}
        if self.config.requester_pays:
            kwargs["RequestPayer"] = "requester"
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(**kwargs):
                self.counters.add(requests=1)
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/") and obj.get("Size", 0) == 0:
                        continue  # a "folder" marker object
                    info = self._info(Location("s3", prefix.bucket, key), obj, key[len(base):])
                    yield info
        except StorageError:
            raise
        except Exception as exc:
            raise translate(exc, str(prefix)) from None

    def read_range(self, loc: Location, start: int, length: int, etag: Optional[str] = None) -> bytes:
        return b"".join(self.iter_range(loc, start, length, etag=etag))

    def iter_range(self, loc: Location, start: int, length: int, etag: Optional[str] = None,
                   chunk: int = 1 << 20) -> Iterator[bytes]:
        if length <= 0:
            return
        args = self._read_args(loc, etag)
        args["Range"] = f"bytes={start}-{start + length - 1}"
        try:
            resp = self.client.get_object(**args)
        except Exception as exc:
            if "InvalidRange" in str(exc):
                return
            raise translate(exc, str(loc)) from None
        self.counters.add(requests=1)
        body = resp["Body"]
        try:
            while True:
                try:
                    data = body.read(chunk)
                except Exception as exc:
                    raise translate(exc, f"{loc} (bytes {start}..{start + length})") from None
                if not data:
                    break
                self.counters.add(read=len(data))
                yield data
        finally:
            body.close()

    # -- writes --------------------------------------------------------------
    def put_bytes(self, loc: Location, data: bytes, checksums: Optional[Dict[str, str]] = None) -> ObjectInfo:
        args = self._write_args(loc)
        args["Body"] = data
        for name, value in (checksums or {}).items():
            if name in WIRE and self._full_object_ok is not False:
                args[f"Checksum{WIRE[name]}"] = value
        try:
            resp = self.client.put_object(**args)
        except Exception as exc:
            err = translate(exc, str(loc))
            if not any(k.startswith("Checksum") for k in args) or isinstance(err, (AccessDenied, NotFound)):
                raise err from None
            # A server that does not know the checksum header: send without it.
            self._full_object_ok = False
            return self.put_bytes(loc, data, None)
        self.counters.add(requests=1, written=len(data))
        info = self._info(loc, resp, "")
        info.size = len(data)
        return info

    def begin_upload(self, loc: Location, size: int) -> S3Upload:
        args = self._write_args(loc)
        algorithm = self.config.checksum_algorithm if self.config.verify else None
        if algorithm and self._full_object_ok is not False:
            try:
                resp = self.client.create_multipart_upload(
                    ChecksumAlgorithm=WIRE[algorithm], ChecksumType="FULL_OBJECT", **args)
                self.counters.add(requests=1)
                return S3Upload(self, loc, resp["UploadId"], algorithm)
            except Exception as exc:
                err = translate(exc, str(loc))
                if isinstance(err, (AccessDenied, NotFound)):
                    raise err from None
                self._full_object_ok = False
        try:
            resp = self.client.create_multipart_upload(**args)
        except Exception as exc:
            raise translate(exc, str(loc)) from None
        self.counters.add(requests=1)
        return S3Upload(self, loc, resp["UploadId"], None)

    def delete(self, loc: Location) -> None:
        try:
            self.client.delete_object(**self._args(loc))
        except Exception as exc:
            err = translate(exc, str(loc))
            if not isinstance(err, NotFound):
                raise err from None
        self.counters.add(requests=1)

    def supported_checksums(self) -> List[str]:
        return [] if self._full_object_ok is False else list(WIRE)
