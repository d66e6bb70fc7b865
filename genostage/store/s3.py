"""S3 (and any S3-compatible server) as a store.

Data requests (ranged GETs, PUTs, upload parts, HEADs, listings) go through
:mod:`genostage.store.wire`, genostage's own lean HTTP client; the rare control-plane
calls (create/complete/abort a multipart upload, delete, HEAD of a bucket or of
part 1) go through a boto3 client, created on first use or injected.
``TransferConfig.transport = "botocore"`` (or ``GENOSTAGE_S3_TRANSPORT=botocore``)
sends everything through boto3.
"""
from __future__ import annotations

import base64
import os
import threading
import xml.etree.ElementTree as ET
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple
from urllib.parse import unquote_plus

from ..codec.checksum import MD5Batcher, etag_of_parts
from ..config import TransferConfig
from ..errors import AccessDenied, GenostageError, NotFound, ObjectChanged, TransferFailed
from ..location import Location
from .base import ObjectInfo, Store, Upload
from .wire import Call, Creds, Response, Wire, WireError

# Wire names of the checksums S3 reports, by genostage's algorithm names.
WIRE = {"crc64nvme": "CRC64NVME", "crc32c": "CRC32C", "crc32": "CRC32", "sha256": "SHA256", "sha1": "SHA1"}

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchVersion", "NoSuchUpload"}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId",
           "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AccountProblem"}
_CHANGED = {"PreconditionFailed", "412"}

Done = Callable[[Optional[BaseException]], None]


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


def _classify(code: str, status: Optional[int], message: str, what: str) -> GenostageError:
    if code == "NoSuchBucket":
        return NotFound(f"{what}: bucket does not exist")
    if code in _NOT_FOUND or status == 404:
        return NotFound(f"{what} does not exist")
    if code in _DENIED or status == 403:
        return AccessDenied(f"{what}: access denied ({code or status})")
    if code in _CHANGED or status == 412:
        return ObjectChanged(f"{what} changed while it was being read (ETag no longer matches)")
    return TransferFailed(f"{what}: {code or status}: {message or ''}".rstrip(": "))


def translate(exc: BaseException, what: str) -> GenostageError:
    """Turn a wire or botocore error into a genostage one with a clear message."""
    if isinstance(exc, GenostageError):
        return exc
    if isinstance(exc, WireError):
        if exc.status is None:
            return TransferFailed(f"{what}: {exc.message}")
        return _classify(exc.code, exc.status, exc.message, what)
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return _classify(str(err.get("Code", "")), status, err.get("Message", ""), what)
    if isinstance(exc, BotoCoreError):
        return TransferFailed(f"{what}: {exc}")
    return TransferFailed(f"{what}: {exc.__class__.__name__}: {exc}")


_S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _raise_embedded_error(resp: Response) -> None:
    """S3 may answer 200 to a long request and put the error in the body (CompleteMultipartUpload)."""
    if b"<Error>" in resp.body[:512]:
        from .wire import error_of

        err = error_of(500, resp.headers, resp.body)
        err.retryable = False
        raise err


def _ns(root: ET.Element) -> str:
    """The ``{namespace}`` prefix of an S3 XML answer's tags ("" when it has none)."""
    return root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""


def _completed_etag(body: bytes) -> Optional[str]:
    """The ETag in a CompleteMultipartUpload answer (None if it names none)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    ns = _ns(root)
    return root.findtext(f"{ns}ETag")


def _etag(value: Optional[str]) -> Optional[str]:
    """ETags without their quotes (servers differ on quoting in listings)."""
    return value.strip('"') if value else None


def _waited(wire: Wire, start: Callable[[Callable[..., None]], None]) -> Tuple[Any, ...]:
    """Start an asynchronous operation (it calls ``done(*outcome)`` on the wire thread) and wait for it."""
    if wire.on_loop_thread():
        raise RuntimeError("a blocking S3 call from the wire thread would wait for itself")
    finished = threading.Event()
    box: List[Tuple[Any, ...]] = []

    def done(*outcome: Any) -> None:
        box.append(outcome)
        finished.set()

    start(done)
    finished.wait()
    return box[0]


def _md5_header(checksums: Optional[Dict[str, str]]) -> Dict[str, str]:
    """``Content-MD5`` from a hex ``md5`` value, when the caller computed one."""
    md5 = (checksums or {}).get("md5")
    return {"Content-MD5": base64.b64encode(bytes.fromhex(md5)).decode()} if md5 else {}


def _parse_time(text: str) -> Optional[float]:
    """An ISO 8601 listing time (``2026-11-29T14:25:44.000Z``) as a POSIX timestamp."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _fields_from_headers(h: Dict[str, str]) -> Dict[str, Any]:
    """A HEAD/PUT answer's headers as the botocore-style fields ``S3Store._info`` reads."""
    out: Dict[str, Any] = {"ETag": h.get("etag"), "VersionId": h.get("x-amz-version-id"),
                           "ChecksumType": h.get("x-amz-checksum-type"),
                           "ServerSideEncryption": h.get("x-amz-server-side-encryption")}
    if "content-length" in h:
        out["ContentLength"] = int(h["content-length"])
    if h.get("x-amz-mp-parts-count"):
        out["PartsCount"] = int(h["x-amz-mp-parts-count"])
    if h.get("last-modified"):
        try:
            out["LastModified"] = parsedate_to_datetime(h["last-modified"])
        except (TypeError, ValueError):
            pass
    for wire in WIRE.values():
        value = h.get(f"x-amz-checksum-{wire.lower()}")
        if value:
            out[f"Checksum{wire}"] = value
    return out


def _env_credentials() -> Optional[Creds]:
    """Credentials from the environment: the first place botocore looks, read without importing it."""
    access, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if access and secret:
        return (access, secret, os.environ.get("AWS_SESSION_TOKEN") or None)
    return None


class _Credentials:
    """botocore's credential chain (profiles, SSO, container and instance roles), asked once;
    refreshable credentials refresh themselves. Environment credentials skip botocore."""

    def __init__(self, client: Any = None) -> None:
        self._client = client
        self._source: Any = None
        self._lock = threading.Lock()
        self._env = _env_credentials() if client is None else None

    def __call__(self) -> Optional[Creds]:
        if self._env is not None:
            return self._env
        with self._lock:
            if self._source is None:
                if self._client is not None:
                    self._source = getattr(getattr(self._client, "_request_signer", None), "_credentials", None)
                else:
                    import botocore.session

                    self._source = botocore.session.get_session().get_credentials()
                if self._source is None:
                    self._source = False
        if not self._source:
            return None
        frozen = self._source.get_frozen_credentials()
        return (frozen.access_key, frozen.secret_key, frozen.token)


def _region(config: TransferConfig) -> str:
    found = config.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if found:
        return found
    import botocore.session

    return botocore.session.get_session().get_config_variable("region") or "us-east-1"


class S3Upload(Upload):
    def __init__(self, store: "S3Store", loc: Location, upload_id: str, algorithm: Optional[str]) -> None:
        self._store = store
        self._loc = loc
        self.upload_id = upload_id
        self._algorithm = algorithm
        self._parts: Dict[int, Dict[str, Any]] = {}
        self._sizes: Dict[int, int] = {}
        self._sent_md5: Dict[int, bytes] = {}  # the Content-MD5 each part went with
        self._lock = threading.Lock()

    def _part_headers(self, number: int, data: Any, checksums: Optional[Dict[str, str]]) -> Dict[str, str]:
        """The part's own CRC when the upload has a checksum algorithm; otherwise (a server
        without the checksum headers) its MD5 as ``Content-MD5``: either way checked on receipt."""
        headers = self._store._payer_header()
        if self._algorithm and checksums and self._algorithm in checksums:
            headers[f"x-amz-checksum-{self._algorithm}"] = checksums[self._algorithm]
        elif self._store.config.verify:  # parts in flight are hashed together (MD5Batcher)
            md5 = (checksums or {}).get("md5") or self._store.md5s.digest(data).hex()
            headers.update(_md5_header({"md5": md5}))
            with self._lock:
                self._sent_md5[number] = bytes.fromhex(md5)
        return headers

    def _record(self, number: int, etag: str, size: int) -> None:
        self._store.counters.add(requests=1, written=size)
        with self._lock:
            self._parts[number] = {"PartNumber": number, "ETag": etag}
            self._sizes[number] = size

    def _assembled(self, etag: Optional[str], version_id: Optional[str]) -> Optional[ObjectInfo]:
        """The published object, without a HEAD, when CompleteMultipartUpload's ETag proves it
        is our parts in order: every part went with its ``Content-MD5`` (checked on receipt),
        and the multipart ETag of those MD5s names exactly these bytes. A HEAD would tell only
        the size, and some stores (``rclone serve s3``) hash the whole object again to answer it."""
        numbers = sorted(self._parts)
        if self._algorithm or not numbers or any(n not in self._sent_md5 for n in numbers):
            return None
        expected = etag_of_parts([self._sent_md5[n] for n in numbers])
        if _etag(etag) != expected:
            return None
        self.proof = "md5 (multipart ETag)"
        return ObjectInfo(self._loc, sum(self._sizes[n] for n in numbers), etag=expected, version_id=version_id)

    def write_part(self, number: int, offset: int, data: "bytes | memoryview",
                   checksums: Optional[Dict[str, str]] = None) -> None:
        store = self._store
        if store.wire is not None:
            (err,) = _waited(store.wire, lambda done: self.write_part_async(number, offset, data, checksums, done))
            if err is not None:
                raise err
            return
        args = store._args(self._loc)
        args.update(UploadId=self.upload_id, PartNumber=number, Body=bytes(data))
        md5 = self._part_headers(number, data, checksums).get("Content-MD5")
        if md5:
            args["ContentMD5"] = md5
        try:
            etag = store.client.upload_part(**args)["ETag"]
        except Exception as exc:
            raise translate(exc, f"{self._loc} (part {number})") from None
        self._record(number, etag, len(data))

    def write_part_async(self, number: int, offset: int, data: "bytes | memoryview",
                         checksums: Optional[Dict[str, str]], done: Done) -> None:
        """Upload one part without waiting; ``done(error or None)`` runs on the wire thread."""
        store = self._store
        if store.wire is None:
            super().write_part_async(number, offset, data, checksums, done)
            return
        what = f"{self._loc} (part {number})"

        def finished(resp: Optional[Response], err: Optional[BaseException]) -> None:
            if err is not None:
                done(translate(err, what))
                return
            assert resp is not None
            self._record(number, resp.headers.get("etag", ""), len(data))
            done(None)

        store.wire.submit(Call("PUT", self._loc.bucket, self._loc.key, body=data,
                               query={"partNumber": str(number), "uploadId": self.upload_id},
                               headers=self._part_headers(number, data, checksums), on_done=finished))

    def complete(self, checksums: Optional[Dict[str, str]] = None) -> ObjectInfo:
        parts = [self._parts[n] for n in sorted(self._parts)]
        full = checksums[self._algorithm] if checksums and self._algorithm and self._algorithm in checksums else None
        store = self._store
        try:
            if store.wire is not None:
                headers = store._payer_header()
                headers["Content-Type"] = "application/xml"
                if full and self._algorithm:
                    headers[f"x-amz-checksum-{self._algorithm}"] = full
                    headers["x-amz-checksum-type"] = "FULL_OBJECT"
                body = "".join(f"<Part><PartNumber>{p['PartNumber']}</PartNumber><ETag>{_xml_escape(p['ETag'])}"
                               f"</ETag></Part>" for p in parts)
                resp = store.wire.call("POST", self._loc.bucket, self._loc.key, query={"uploadId": self.upload_id},
                                       headers=headers, body=f'<CompleteMultipartUpload xmlns="{_S3_NS}">'
                                       f"{body}</CompleteMultipartUpload>".encode())
                _raise_embedded_error(resp)
                etag, version_id = _completed_etag(resp.body), resp.headers.get("x-amz-version-id")
            else:
                args = store._args(self._loc)
                args.update(UploadId=self.upload_id, MultipartUpload={"Parts": parts})
                if full and self._algorithm:
                    args[f"Checksum{WIRE[self._algorithm]}"] = full
                    args["ChecksumType"] = "FULL_OBJECT"
                done = store.client.complete_multipart_upload(**args)
                etag, version_id = done.get("ETag"), done.get("VersionId")
        except Exception as exc:
            raise translate(exc, str(self._loc)) from None
        store.counters.add(requests=1)
        return self._assembled(etag, version_id) or store.stat(self._loc)

    def abort(self) -> None:
        store = self._store
        try:
            if store.wire is not None:
                store.wire.call("DELETE", self._loc.bucket, self._loc.key, query={"uploadId": self.upload_id},
                                headers=store._payer_header())
            else:
                store.client.abort_multipart_upload(UploadId=self.upload_id, **store._args(self._loc))
        except Exception:  # best effort: the upload may already be gone
            pass


class S3Store(Store):
    """An S3 bucket space; thread-safe."""

    def __init__(self, client: Any = None, config: Optional[TransferConfig] = None) -> None:
        super().__init__()
        self.config = config or TransferConfig()
        self._client = client
        self._client_lock = threading.Lock()
        # Whether the server honours full-object checksums on uploads; None until tried.
        self._full_object_ok: Optional[bool] = None
        self.md5s = MD5Batcher()
        self.wire: Optional[Wire] = None
        if self.config.transport != "botocore":
            region = client.meta.region_name if client is not None else _region(self.config)
            self.wire = Wire(self.config.endpoint_url, region or "us-east-1", _Credentials(client),
                             concurrency=self.config.concurrency, connect_timeout=self.config.connect_timeout,
                             read_timeout=self.config.read_timeout, max_attempts=self.config.max_attempts)

    @property
    def client(self) -> Any:
        """The boto3 client for control-plane calls (made on first use)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = make_client(self.config)
        return self._client

    def close(self) -> None:
        if self.wire is not None:
            self.wire.close()

    # -- helpers -------------------------------------------------------------
    def _args(self, loc: Location) -> Dict[str, Any]:
        args: Dict[str, Any] = {"Bucket": loc.bucket, "Key": loc.key}
        if self.config.requester_pays:
            args["RequestPayer"] = "requester"
        return args

    def _payer_header(self) -> Dict[str, str]:
        return {"x-amz-request-payer": "requester"} if self.config.requester_pays else {}

    def _read_args(self, loc: Location, etag: Optional[str]) -> Dict[str, Any]:
        args = self._args(loc)
        if loc.version_id:
            args["VersionId"] = loc.version_id
        if etag:
            args["IfMatch"] = f'"{etag}"'
        return args

    def _read_request(self, loc: Location, etag: Optional[str]) -> Tuple[Dict[str, str], Optional[Dict[str, Optional[str]]]]:
        headers = self._payer_header()
        if etag:
            headers["If-Match"] = f'"{etag}"'
        return headers, ({"versionId": loc.version_id} if loc.version_id else None)

    def _write_args(self, loc: Location) -> Dict[str, Any]:
        args = self._args(loc)
        if self.config.sse:
            args["ServerSideEncryption"] = self.config.sse
        if self.config.sse_kms_key_id:
            args["SSEKMSKeyId"] = self.config.sse_kms_key_id
        return args

    def _write_headers(self) -> Dict[str, str]:
        headers = self._payer_header()
        if self.config.sse:
            headers["x-amz-server-side-encryption"] = self.config.sse
        if self.config.sse_kms_key_id:
            headers["x-amz-server-side-encryption-aws-kms-key-id"] = self.config.sse_kms_key_id
        return headers

    # -- reads ---------------------------------------------------------------
    def stat(self, loc: Location, checksums: bool = True) -> ObjectInfo:
        if loc.key == "" or loc.key.endswith("/"):
            raise NotFound(f"{loc} is a prefix, not an object")
        try:
            if self.wire is not None:
                headers, query = self._read_request(loc, None)
                if checksums:
                    headers["x-amz-checksum-mode"] = "ENABLED"
                resp = self.wire.call("HEAD", loc.bucket, loc.key, query=query, headers=headers)
                fields = _fields_from_headers(resp.headers)
            else:
                args = self._read_args(loc, None)
                if checksums:
                    args["ChecksumMode"] = "ENABLED"
                fields = self.client.head_object(**args)
        except Exception as exc:
            err = translate(exc, str(loc))
            if isinstance(err, NotFound):
                self._check_bucket(loc)
            raise err from None
        self.counters.add(requests=1)
        return self._info(loc, fields, "")

    def first_part_size(self, loc: Location, etag: Optional[str] = None) -> Optional[int]:
        """The size of part 1 of a multipart object (HeadObject with PartNumber=1), or None
        when the server does not say (then the part size of a ``-N`` ETag must be guessed)."""
        try:
            if self.wire is not None:
                headers, query = self._read_request(loc, etag)
                query = dict(query or {}, partNumber="1")
                fields = _fields_from_headers(self.wire.call("HEAD", loc.bucket, loc.key, query=query,
                                                             headers=headers).headers)
            else:
                fields = self.client.head_object(PartNumber=1, **self._read_args(loc, etag))
        except Exception:
            return None
        self.counters.add(requests=1)
        if not fields.get("PartsCount"):
            return None
        return int(fields["ContentLength"])

    def _check_bucket(self, loc: Location) -> None:
        """Tell a missing bucket apart from a missing key (HEAD gives both as 404)."""
        try:
            if self.wire is not None:
                self.wire.call("HEAD", loc.bucket, headers=self._payer_header())
            else:
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
            mtime=mtime if isinstance(mtime, float) or mtime is None else mtime.timestamp(),
            relative=relative,
            checksums=sums,
            checksum_type=resp.get("ChecksumType"),
            parts_count=resp.get("PartsCount"),
            sse=resp.get("ServerSideEncryption"),
        )

    def list(self, prefix: Location) -> Iterator[ObjectInfo]:
        base = prefix.key if (prefix.key == "" or prefix.key.endswith("/")) else prefix.key + "/"
        pages = self._pages_wire(prefix.bucket, base) if self.wire is not None else self._pages_boto(prefix.bucket, base)
        try:
            for page in pages:
                self.counters.add(requests=1)
                for obj in page:
                    key = obj["Key"]
                    if key.endswith("/") and obj.get("Size", 0) == 0:
                        continue  # a "folder" marker object
                    yield self._info(Location("s3", prefix.bucket, key), obj, key[len(base):])
        except GenostageError:
            raise
        except Exception as exc:
            err = translate(exc, str(prefix))
            if isinstance(err, NotFound) and "bucket" not in str(err):
                err = NotFound(f"{prefix}: bucket {prefix.bucket!r} does not exist")
            raise err from None

    def _pages_boto(self, bucket: str, base: str) -> Iterator[List[Dict[str, Any]]]:
        kwargs: Dict[str, Any] = {"Bucket": bucket, "Prefix": base}
        if self.config.requester_pays:
            kwargs["RequestPayer"] = "requester"
        for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
            yield page.get("Contents", [])

    def _pages_wire(self, bucket: str, base: str) -> Iterator[List[Dict[str, Any]]]:
        """ListObjectsV2 pages parsed from the XML (keys URL-encoded on the wire, so keys with
        characters XML cannot carry survive)."""
        assert self.wire is not None
        token: Optional[str] = None
        while True:
            query: Dict[str, Optional[str]] = {"list-type": "2", "prefix": base, "encoding-type": "url"}
            if token:
                query["continuation-token"] = token
            resp = self.wire.call("GET", bucket, query=query, headers=self._payer_header())
            root = ET.fromstring(resp.body)
            ns = _ns(root)
            encoded = (root.findtext(f"{ns}EncodingType") or "").lower() == "url"
            page = []
            for item in root.iter(f"{ns}Contents"):
                key = item.findtext(f"{ns}Key") or ""
                page.append({"Key": unquote_plus(key) if encoded else key,  # as botocore decodes
                             "Size": int(item.findtext(f"{ns}Size") or 0),
                             "ETag": item.findtext(f"{ns}ETag"),
                             "LastModified": _parse_time(item.findtext(f"{ns}LastModified") or ""),
                             "ChecksumType": item.findtext(f"{ns}ChecksumType")})
            yield page
            token = root.findtext(f"{ns}NextContinuationToken")
            if (root.findtext(f"{ns}IsTruncated") or "").lower() != "true" or not token:
                return

    def read_range(self, loc: Location, start: int, length: int, etag: Optional[str] = None) -> bytes:
        return b"".join(self.iter_range(loc, start, length, etag=etag))

    def get_async(self, loc: Location, start: int, length: int, consume: Callable[[memoryview], None],
                  done: Done, etag: Optional[str] = None) -> Call:
        """One ranged GET without waiting: pieces go to ``consume`` and the outcome (an error or
        None) to ``done``, both on the wire thread; a 416 (an empty object) counts as success."""
        assert self.wire is not None
        got = [0]
        what = str(loc)

        def piece(data: memoryview) -> None:
            got[0] += len(data)
            if got[0] > length:
                raise TransferFailed(f"{loc}: the server sent more than the {length} bytes asked for "
                                     f"from byte {start} (Range ignored?)")
            consume(data)

        def finished(resp: Optional[Response], err: Optional[BaseException]) -> None:
            self.counters.add(requests=1, read=got[0])
            if isinstance(err, WireError) and err.code == "InvalidRange":
                err = None
            done(None if err is None else translate(err, what))

        headers, query = self._read_request(loc, etag)
        headers["Range"] = f"bytes={start}-{start + length - 1}"
        return self.wire.submit(Call("GET", loc.bucket, loc.key, query=query, headers=headers,
                                     on_piece=piece, on_done=finished))

    def read_into(self, loc: Location, start: int, length: int, consume: Callable[[memoryview], None],
                  etag: Optional[str] = None, chunk: int = 1 << 20,
                  cancel: Optional[threading.Event] = None) -> None:
        if self.wire is None:
            return super().read_into(loc, start, length, consume, etag=etag, chunk=chunk, cancel=cancel)
        if length <= 0:
            return None
        finished = threading.Event()
        box: List[Optional[BaseException]] = []

        def done(err: Optional[BaseException]) -> None:
            box.append(err)
            finished.set()

        call = self.get_async(loc, start, length, consume, done, etag)
        while not finished.wait(0.2):
            if cancel is not None and cancel.is_set():
                from ..errors import Interrupted

                self.wire.cancel(call, Interrupted(getattr(cancel, "signum", 15)))
                finished.wait()
        if box[0] is not None:
            raise box[0]
        return None

    def iter_range(self, loc: Location, start: int, length: int, etag: Optional[str] = None,
                   chunk: int = 1 << 20) -> Iterator[bytes]:
        if length <= 0:
            return
        if self.wire is not None:
            yield from self._iter_range_wire(loc, start, length, etag, chunk)
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

    def _iter_range_wire(self, loc: Location, start: int, length: int, etag: Optional[str],
                         chunk: int) -> Iterator[bytes]:
        """Windows of the range as successive GETs, the next in flight while one is consumed,
        so a reader that stops early leaves at most two windows behind."""
        window = min(max(chunk, 8 << 20), 64 << 20)
        spans = [(s, min(window, start + length - s)) for s in range(start, start + length, window)]
        inflight: List[Tuple[Call, threading.Event, List[Any]]] = []

        def launch(s: int, n: int) -> None:
            pieces: List[Any] = []
            event = threading.Event()

            def done(err: Optional[BaseException]) -> None:
                pieces.append(err)
                event.set()

            call = self.get_async(loc, s, n, lambda p: pieces.append(bytes(p)), done, etag)
            inflight.append((call, event, pieces))

        try:
            for i, (s, n) in enumerate(spans):
                while len(inflight) < 2 and i + len(inflight) < len(spans):
                    launch(*spans[i + len(inflight)])
                call, event, pieces = inflight.pop(0)
                event.wait()
                err = pieces.pop()
                if err is not None:
                    raise err
                data = b"".join(pieces)
                for off in range(0, len(data), chunk):
                    yield data[off:off + chunk] if len(data) > chunk else data
                if len(data) < n:
                    return  # the object ends here
        finally:
            assert self.wire is not None
            for call, _, _ in inflight:
                self.wire.cancel(call, TransferFailed("read abandoned"))

    # -- writes --------------------------------------------------------------
    def _put_request(self, data: Any, checksums: Optional[Dict[str, str]]) -> Tuple[Dict[str, str], Dict[str, str]]:
        sums = {k: v for k, v in (checksums or {}).items() if k in WIRE and self._full_object_ok is not False}
        headers = self._write_headers()
        headers.update(_md5_header(checksums))
        headers.update({f"x-amz-checksum-{name}": value for name, value in sums.items()})
        if sums:  # what SDKs send beside the value (some servers, moto among them, store only then)
            headers["x-amz-sdk-checksum-algorithm"] = WIRE[next(iter(sums))]
        return headers, sums

    def put_bytes(self, loc: Location, data: bytes, checksums: Optional[Dict[str, str]] = None) -> ObjectInfo:
        """One PutObject; ``checksums`` (wire values by algorithm, ``md5`` as hex) go with it
        for the server to check on receipt."""
        if self.wire is not None:
            info, err = _waited(self.wire, lambda done: self.put_async(loc, data, checksums, done))
            if err is not None:
                raise err
            return info
        headers, sums = self._put_request(data, checksums)
        args = self._write_args(loc)
        args["Body"] = data
        if "Content-MD5" in headers:
            args["ContentMD5"] = headers["Content-MD5"]
        args.update({f"Checksum{WIRE[name]}": value for name, value in sums.items()})
        try:
            fields = self.client.put_object(**args)
        except Exception as exc:
            err = translate(exc, str(loc))
            if not sums or isinstance(err, (AccessDenied, NotFound)):
                raise err from None
            # A server that does not know the checksum header: send without it.
            self._full_object_ok = False
            return self.put_bytes(loc, data, {k: v for k, v in (checksums or {}).items() if k not in WIRE})
        self.counters.add(requests=1, written=len(data))
        info = self._info(loc, fields, "")
        info.size = len(data)
        return info

    def put_async(self, loc: Location, data: Any, checksums: Optional[Dict[str, str]],
                  done: Callable[[Optional[ObjectInfo], Optional[BaseException]], None]) -> None:
        """:meth:`put_bytes` without waiting; ``done(info, error)`` runs on the wire thread."""
        if self.wire is None:
            super().put_async(loc, data, checksums, done)
            return
        headers, sums = self._put_request(data, checksums)

        def finished(resp: Optional[Response], err: Optional[BaseException]) -> None:
            if err is not None:
                gerr = translate(err, str(loc))
                if sums and not isinstance(gerr, (AccessDenied, NotFound)):
                    self._full_object_ok = False  # retried without the checksum header
                    self.put_async(loc, data, {k: v for k, v in (checksums or {}).items() if k not in WIRE}, done)
                    return
                done(None, gerr)
                return
            assert resp is not None
            self.counters.add(requests=1, written=len(data))
            info = self._info(loc, _fields_from_headers(resp.headers), "")
            info.size = len(data)
            done(info, None)

        self.wire.submit(Call("PUT", loc.bucket, loc.key, headers=headers, body=data, on_done=finished))

    def _create_upload(self, loc: Location, algorithm: Optional[str]) -> Tuple[str, bool]:
        """CreateMultipartUpload: (upload id, whether the server took the checksum algorithm)."""
        if self.wire is not None:
            headers = self._write_headers()
            if algorithm:
                headers["x-amz-checksum-algorithm"] = WIRE[algorithm]
                headers["x-amz-checksum-type"] = "FULL_OBJECT"
            resp = self.wire.call("POST", loc.bucket, loc.key, query={"uploads": None}, headers=headers)
            root = ET.fromstring(resp.body)
            ns = _ns(root)
            upload_id = root.findtext(f"{ns}UploadId")
            if not upload_id:
                raise TransferFailed(f"{loc}: the server started no multipart upload (no UploadId in its answer)")
            return upload_id, bool(resp.headers.get("x-amz-checksum-algorithm"))
        args = self._write_args(loc)
        if algorithm:
            args.update(ChecksumAlgorithm=WIRE[algorithm], ChecksumType="FULL_OBJECT")
        resp = self.client.create_multipart_upload(**args)
        return resp["UploadId"], bool(resp.get("ChecksumAlgorithm"))

    def begin_upload(self, loc: Location, size: int) -> S3Upload:
        algorithm = self.config.checksum_algorithm if self.config.verify else None
        if algorithm and self._full_object_ok is not False:
            try:
                upload_id, honoured = self._create_upload(loc, algorithm)
                self.counters.add(requests=1)
                if honoured:
                    return S3Upload(self, loc, upload_id, algorithm)
                # Accepted but not honoured (the answer names no algorithm): a server without
                # checksum support; its parts are checked by Content-MD5 instead.
                self._full_object_ok = False
                return S3Upload(self, loc, upload_id, None)
            except Exception as exc:
                err = translate(exc, str(loc))
                if isinstance(err, (AccessDenied, NotFound)):
                    raise err from None
                self._full_object_ok = False
        try:
            upload_id, _ = self._create_upload(loc, None)
        except Exception as exc:
            raise translate(exc, str(loc)) from None
        self.counters.add(requests=1)
        return S3Upload(self, loc, upload_id, None)

    def delete(self, loc: Location) -> None:
        try:
            if self.wire is not None:
                self.wire.call("DELETE", loc.bucket, loc.key, headers=self._payer_header())
            else:
                self.client.delete_object(**self._args(loc))
        except Exception as exc:
            err = translate(exc, str(loc))
            if not isinstance(err, NotFound):
                raise err from None
        self.counters.add(requests=1)

    def supported_checksums(self) -> List[str]:
        return [] if self._full_object_ok is False else list(WIRE)
