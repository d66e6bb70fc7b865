"""S3 (and any S3-compatible server) as a store.

Every request, data and control alike (ranged GETs, PUTs, multipart uploads, HEADs,
listings, deletes), goes through :mod:`genostage.store.wire`, genostage's own lean HTTP
client. boto3/botocore are asked only for credentials (the standard chain: profiles, SSO,
container and instance roles) when the environment holds none, and for the region.

Uploads prove themselves where the store's answers allow it:

- every part and every single PUT goes with its ``Content-MD5`` (the store refuses bytes
  that arrive corrupted; the request is sent again) and, where the store takes checksum
  headers, its CRC64NVME;
- each UploadPart answer's ETag is compared with the part's MD5 before the upload is
  completed: a part the store received differently is sent again, so a corrupted upload
  never replaces the object that was there;
- CompleteMultipartUpload's ETag must be the MD5 of the parts' MD5s (``proof`` "md5
  (multipart ETag)"); a single PUT's ETag must be its MD5 ("md5"). Under SSE-KMS an ETag is
  not an MD5, so a different one proves nothing either way: the caller then checks another way.
- a CompleteMultipartUpload whose first answer was lost is retried and may then meet
  NoSuchUpload: the object is there when its ETag is the one our parts make.
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
import time
import xml.etree.ElementTree as ET
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import unquote_plus

from ..codec.checksum import MD5Batcher, etag_of_parts, is_md5_etag
from ..config import TransferConfig
from ..errors import (AccessDenied, ChecksumMismatch, GenostageError, NotFound, ObjectChanged, TransferFailed,
                      UsageError)
from ..location import Location
from .base import Consume, Done, ObjectInfo, Pending, Store, Upload, UploadLost
from .wire import Call, Creds, Response, Wire, WireError, error_of

log = logging.getLogger("genostage.s3")

# Wire names of the checksums S3 reports, by genostage's algorithm names.
WIRE = {"crc64nvme": "CRC64NVME", "crc32c": "CRC32C", "crc32": "CRC32", "sha256": "SHA256", "sha1": "SHA1"}

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchVersion", "NoSuchUpload"}
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "InvalidAccessKeyId",
           "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "AccountProblem"}
_CHANGED = {"PreconditionFailed", "412"}
# answers that say the server does not take a checksum header (rather than a transient fault)
_NO_CHECKSUMS = {"InvalidArgument", "InvalidRequest", "NotImplemented", "501", "UnsupportedOperation"}

_S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
REFUSALS = 3  # requests refused with a checksum header before none is sent any more


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
    """Turn a wire error (or anything unexpected) into a genostage one with a clear message."""
    if isinstance(exc, GenostageError):
        return exc
    if isinstance(exc, WireError):
        if exc.status is None:
            return TransferFailed(f"{what}: {exc.message}")
        return _classify(exc.code, exc.status, exc.message, what)
    return TransferFailed(f"{what}: {exc.__class__.__name__}: {exc}")


def _xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _raise_embedded_error(resp: Response) -> None:
    """S3 may answer 200 to a long request and put the error in the body (CompleteMultipartUpload);
    an InternalError, SlowDown and the like there may be tried again, as S3 says."""
    if b"<Error>" in resp.body[:512]:
        raise error_of(500, resp.headers, resp.body)


def _ns(root: ET.Element) -> str:
    """The ``{namespace}`` prefix of an S3 XML answer's tags ("" when it has none)."""
    return root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""


def _xml(body: bytes, what: str) -> ET.Element:
    try:
        return ET.fromstring(body)
    except ET.ParseError:
        raise TransferFailed(f"{what}: the server's answer is not XML: {body[:80]!r}") from None


def _completed_etag(body: bytes) -> Optional[str]:
    """The ETag in a CompleteMultipartUpload answer (None if it names none)."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return None
    return root.findtext(f"{_ns(root)}ETag")


def _completed_checksums(body: bytes) -> Dict[str, Any]:
    """The checksum fields (``ChecksumCRC64NVME``, ``ChecksumType``) of a CompleteMultipartUpload answer."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return {}
    ns = _ns(root)
    names = [f"Checksum{w}" for w in WIRE.values()] + ["ChecksumType"]
    return {name: root.findtext(f"{ns}{name}") for name in names if root.findtext(f"{ns}{name}")}


def _etag(value: Optional[str]) -> Optional[str]:
    """ETags without their quotes (servers differ on quoting in listings)."""
    return value.strip('"') if value else None


def _md5_header(md5_hex: Optional[str]) -> Dict[str, str]:
    return {"Content-MD5": base64.b64encode(bytes.fromhex(md5_hex)).decode()} if md5_hex else {}


def _parse_time(text: str) -> Optional[float]:
    """An ISO 8601 listing time (``2026-11-29T14:25:44.000Z``) as a POSIX timestamp."""
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _fields_from_headers(h: Dict[str, str]) -> Dict[str, Any]:
    """A HEAD/PUT answer's headers as the fields ``S3Store._info`` reads."""
    out: Dict[str, Any] = {"ETag": h.get("etag"), "VersionId": h.get("x-amz-version-id"),
                           "ChecksumType": h.get("x-amz-checksum-type"),
                           "ServerSideEncryption": h.get("x-amz-server-side-encryption")}
    if "content-length" in h:
        out["ContentLength"] = int(h["content-length"])
    if h.get("x-amz-mp-parts-count"):
        out["PartsCount"] = int(h["x-amz-mp-parts-count"])
    if h.get("last-modified"):
        try:
            out["LastModified"] = parsedate_to_datetime(h["last-modified"]).timestamp()
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
    refreshable credentials refresh themselves. Environment credentials skip botocore; an
    injected boto3 client lends its own."""

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


def _region(config: TransferConfig, client: Any) -> str:
    if client is not None and getattr(getattr(client, "meta", None), "region_name", None):
        return str(client.meta.region_name)
    found = config.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if found:
        return found
    import botocore.session

    return botocore.session.get_session().get_config_variable("region") or "us-east-1"


class _Call(Pending):
    """A request in flight (the latest, when it is sent again), as the protocol's :class:`Pending`;
    ``body``: the bytes it sends (again, if need be)."""

    def __init__(self, wire: Wire, call: Optional[Call] = None, body: "Optional[bytes | memoryview]" = None,
                 done: Optional[Done] = None) -> None:
        self._wire, self.call, self.body, self._done = wire, call, body, done

    def cancel(self, reason: BaseException) -> None:
        if self.call is not None:
            self._wire.cancel(self.call, reason)

    def end(self, err: Optional[BaseException]) -> None:
        """The outcome is final: let go of the request, its body and the caller's callback,
        then report it. (The callbacks that may send a body again refer to each other, a cycle
        that only the cyclic garbage collector frees: holding the body, or the caller's callback
        with its part, there kept ~30-45 parts of 16 MiB of a 2 GiB upload alive, 1.1 GB of RSS
        where 0.3 GB do.)"""
        done, self._done = self._done, None
        self.call = self.body = None
        if done is not None:  # reported once
            done(err)


def _proves(etag: Optional[str], md5_hex: str, sse: Optional[str]) -> Optional[bool]:
    """Whether a store's ETag proves (True) or disproves (False) that it holds the bytes
    whose MD5 is ``md5_hex``; None when it tells nothing (not an MD5, or SSE-KMS)."""
    tag = _etag(etag)
    if tag == md5_hex:
        return True
    if not is_md5_etag(tag) or sse == "aws:kms":
        return None
    return False


class S3PutUpload(Upload):
    """An object written by one PutObject (``parts == 1``): part 1 is the whole object."""

    publishes_on_write = True
    completes_quickly = True  # the PUT's answer is all complete() looks at

    def __init__(self, store: "S3Store", loc: Location) -> None:
        self._store = store
        self._loc = loc
        self._info: Optional[ObjectInfo] = None
        self._md5 = ""

    def write_part_async(self, number: int, offset: int, data: "bytes | memoryview",
                         checksums: Dict[str, str], done: Done) -> Pending:
        store = self._store
        self._md5 = checksums.get("md5") or hashlib.md5(data).hexdigest()
        sums = {k: v for k, v in checksums.items() if k in WIRE}
        what = str(self._loc)
        size = len(data)
        refusals = [0]

        def finished(resp: Optional[Response], err: Optional[BaseException]) -> None:
            if err is not None:
                if sums and store.refuses_checksums(err):  # a server without the checksum headers?
                    refusals[0] += 1
                    if refusals[0] == 1:  # once more as it was: one refusal may be a hiccup
                        send(True)
                        return
                    store.refused()
                    send(False)
                    return
                handle.end(translate(err, what))
                return
            assert resp is not None
            store.counters.add(requests=1, written=size)
            self._info = store.info_from(self._loc, _fields_from_headers(resp.headers), "")
            self._info.size = size
            handle.end(None)

        handle = _Call(store.wire, body=data, done=done)

        def send(with_sums: bool) -> None:
            headers = store.write_headers()
            headers.update(_md5_header(self._md5))
            if with_sums and sums:
                headers.update({f"x-amz-checksum-{name}": value for name, value in sums.items()})
                # what SDKs send beside the value (some servers, moto among them, store it only then)
                headers["x-amz-sdk-checksum-algorithm"] = WIRE[next(iter(sums))]
            handle.call = store.wire.submit(Call("PUT", self._loc.bucket, self._loc.key, headers=headers,
                                                 body=handle.body, on_done=finished))

        send(store.full_object_ok is not False)
        return handle

    def complete(self, checksums: Optional[Dict[str, str]] = None) -> ObjectInfo:
        info = self._info
        assert info is not None, "complete() before the PUT finished"
        proved = _proves(info.etag, self._md5, self._store.config.sse)
        if proved is False:
            self._store.delete(self._loc)
            raise ChecksumMismatch(str(self._loc), "md5 (ETag)", self._md5, str(info.etag))
        if proved:
            self.proof = "md5"
        return info

    def abort(self) -> None:
        pass  # nothing was published unless the PUT succeeded, and then complete() decides


class S3Upload(Upload):
    """A multipart upload: parts checked on receipt, completed when all are in."""

    def __init__(self, store: "S3Store", loc: Location, upload_id: str, algorithm: Optional[str]) -> None:
        self._store = store
        self._loc = loc
        self.upload_id = upload_id
        self._algorithm = algorithm
        self._parts: Dict[int, str] = {}  # number -> ETag the store answered
        self._sizes: Dict[int, int] = {}
        self._md5s: Dict[int, str] = {}  # number -> hex MD5 of the bytes sent
        self._lock = threading.Lock()
        self.entry = {"bucket": loc.bucket, "key": loc.key, "upload_id": upload_id}
        self.journal_entry = self.entry

    def write_part_async(self, number: int, offset: int, data: "bytes | memoryview",
                         checksums: Dict[str, str], done: Done) -> Pending:
        store = self._store
        md5 = checksums.get("md5") or store.md5s.digest(data).hex()  # parts in flight hashed together
        headers = store.payer_header()
        headers.update(_md5_header(md5))
        if self._algorithm and self._algorithm in checksums:
            headers[f"x-amz-checksum-{self._algorithm}"] = checksums[self._algorithm]
        what = f"{self._loc} (part {number})"
        retry = store.config.retry_policy()
        tries = [0]
        size = len(data)

        def finished(resp: Optional[Response], err: Optional[BaseException]) -> None:
            if err is not None:
                if isinstance(err, WireError) and err.code == "NoSuchUpload":
                    # some stores (rclone) drop the whole upload when a part arrives corrupted
                    handle.end(UploadLost(f"{self._loc}: the store dropped the multipart upload (part {number})"))
                    return
                handle.end(translate(err, what))
                return
            assert resp is not None
            etag = resp.headers.get("etag", "")
            if _proves(etag, md5, store.config.sse) is False:
                # the store holds other bytes than we sent (corrupted on the way, and it did not
                # check Content-MD5): send the part again before anything is published
                tries[0] += 1
                delay = retry.delay(tries[0], 0.0)
                if delay is not None:
                    log.warning("%s: the store received different bytes (ETag %s, sent MD5 %s); sending again",
                                what, _etag(etag), md5)
                    send()
                    return
                handle.end(ChecksumMismatch(what, "md5 (part ETag)", md5, str(_etag(etag))))
                return
            store.counters.add(requests=1, written=size)
            with self._lock:
                self._parts[number] = etag
                self._sizes[number] = size
                self._md5s[number] = md5
            handle.end(None)

        handle = _Call(store.wire, body=data, done=done)

        def send() -> None:
            handle.call = store.wire.submit(Call("PUT", self._loc.bucket, self._loc.key, body=handle.body,
                                                 query={"partNumber": str(number), "uploadId": self.upload_id},
                                                 headers=headers, on_done=finished))

        send()
        return handle

    def _proven(self, etag: Optional[str]) -> bool:
        """Every part's ETag was its MD5, and the completed ETag is the MD5 of those MD5s."""
        numbers = sorted(self._parts)
        if not numbers or any(_etag(self._parts[n]) != self._md5s[n] for n in numbers):
            return False
        return _etag(etag) == etag_of_parts([bytes.fromhex(self._md5s[n]) for n in numbers])

    def complete(self, checksums: Optional[Dict[str, str]] = None) -> ObjectInfo:
        store = self._store
        numbers = sorted(self._parts)
        headers = store.payer_header()
        headers["Content-Type"] = "application/xml"
        full = (checksums or {}).get(self._algorithm) if self._algorithm else None
        if full and self._algorithm:
            headers[f"x-amz-checksum-{self._algorithm}"] = full
            headers["x-amz-checksum-type"] = "FULL_OBJECT"
        body = "".join(f"<Part><PartNumber>{n}</PartNumber><ETag>{_xml_escape(self._parts[n])}</ETag></Part>"
                       for n in numbers)
        payload = f'<CompleteMultipartUpload xmlns="{_S3_NS}">{body}</CompleteMultipartUpload>'.encode()
        retry, first, tries = store.config.retry_policy(), time.monotonic(), 0
        while True:
            tries += 1
            try:
                resp = store.wire.call("POST", self._loc.bucket, self._loc.key, query={"uploadId": self.upload_id},
                                       headers=headers, body=payload)
                _raise_embedded_error(resp)
                etag, version_id = _completed_etag(resp.body), resp.headers.get("x-amz-version-id")
                fields = _completed_checksums(resp.body)
                break
            except WireError as exc:
                if exc.code == "NoSuchUpload":  # an earlier try (its answer lost) may have completed it
                    found = self._completed_before()
                    if found.etag and self._proven(found.etag):
                        self.proof = "md5 (multipart ETag)"
                    return found
                delay = retry.delay(tries, time.monotonic() - first) if exc.retryable else None
                if delay is None:
                    raise translate(exc, str(self._loc)) from None
                log.warning("%s: CompleteMultipartUpload: %s; again in %.1f s", self._loc, exc, delay)
                time.sleep(delay)
        store.counters.add(requests=1)
        if not self._proven(etag):
            return store.stat(self._loc)
        self.proof = "md5 (multipart ETag)"
        if self._algorithm and not fields:  # what the store keeps of our full-object checksum
            return store.stat(self._loc)
        fields.update(ETag=etag, VersionId=version_id, ContentLength=sum(self._sizes.values()))
        return store.info_from(self._loc, fields, "")

    def _completed_before(self) -> ObjectInfo:
        """After NoSuchUpload: an earlier try completed the upload and its answer was lost, if
        the object is there with our size. Its ETag proves it when it is the one our parts make;
        a store that reports another (a whole-object MD5: rclone) leaves the proof to the caller
        (a read back). No object, or another size: the upload is truly gone."""
        try:
            info = self._store.stat(self._loc)
        except NotFound:
            info = None
        size = sum(self._sizes.values())
        if info is None or info.size != size:
            raise TransferFailed(f"{self._loc}: the multipart upload is gone (NoSuchUpload) and the object "
                                 f"there is not ours ({info.size if info else 'no'} bytes, {size} were sent)")
        log.info("%s: completed by an earlier try whose answer was lost", self._loc)
        return info

    def abort(self) -> None:
        self._store.abort_upload(self.entry)


class S3Store(Store):
    """An S3 bucket space; thread-safe."""

    callbacks_must_not_block = True

    def __init__(self, client: Any = None, config: Optional[TransferConfig] = None) -> None:
        super().__init__()
        self.config = config or TransferConfig()
        # Whether the server honours full-object checksums on uploads; None until tried.
        self.full_object_ok: Optional[bool] = None
        self._refusals = 0
        self._refusal_lock = threading.Lock()
        self.md5s = MD5Batcher()
        c = self.config
        self.wire = Wire(c.endpoint_url, _region(c, client), _Credentials(client), concurrency=c.concurrency,
                         connect_timeout=c.connect_timeout, read_timeout=c.read_timeout,
                         retry=c.retry_policy(), low_speed_limit=c.low_speed_limit,
                         low_speed_time=c.low_speed_time, sign=c.sign)

    def close(self) -> None:
        self.wire.close()

    # -- helpers -------------------------------------------------------------
    def payer_header(self) -> Dict[str, str]:
        return {"x-amz-request-payer": "requester"} if self.config.requester_pays else {}

    def write_headers(self) -> Dict[str, str]:
        headers = self.payer_header()
        if self.config.sse:
            headers["x-amz-server-side-encryption"] = self.config.sse
        if self.config.sse_kms_key_id:
            headers["x-amz-server-side-encryption-aws-kms-key-id"] = self.config.sse_kms_key_id
        return headers

    def _read_request(self, loc: Location, etag: Optional[str]) -> Tuple[Dict[str, str], Optional[Dict[str, Optional[str]]]]:
        headers = self.payer_header()
        if etag:
            headers["If-Match"] = f'"{etag}"'
        return headers, ({"versionId": loc.version_id} if loc.version_id else None)

    @staticmethod
    def check_key(loc: Location) -> None:
        """A key must be valid UTF-8 (a local file name may not be)."""
        try:
            loc.key.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"{loc!s}: not a valid S3 key (the file name is not valid UTF-8)") from None

    def _with_checksums(self, request: Any) -> Any:
        """``request()``, tried once more when refused for its checksum header: a server that
        does not take them refuses twice; one refusal may be a proxy's hiccup."""
        try:
            return request()
        except WireError as exc:
            if not self.refuses_checksums(exc):
                raise
            log.info("a request with a checksum header was refused (%s); trying it once more", exc)
            return request()

    def refused(self) -> None:
        """A request was refused with its checksum header (and is sent again without). After a
        few such refusals the store is taken not to take them at all: one refusal (a proxy's
        hiccup, say) must not make the rest of the run upload without CRC64NVME."""
        with self._refusal_lock:
            self._refusals += 1
            if self._refusals >= REFUSALS and self.full_object_ok is not False:
                log.info("%s refused checksum headers %d times: sending none from now on",
                         self.config.endpoint_url or "the store", self._refusals)
                self.full_object_ok = False

    @staticmethod
    def refuses_checksums(err: BaseException) -> bool:
        """An answer saying the server does not take a checksum header (not a transient fault)."""
        return isinstance(err, WireError) and err.status is not None and (
            err.code in _NO_CHECKSUMS or (err.status == 400 and "checksum" in err.message.lower()))

    def _call(self, method: str, loc: Location, what: str, **kw: Any) -> Response:
        try:
            return self.wire.call(method, loc.bucket, loc.key, **kw)
        except WireError as exc:
            raise translate(exc, what) from None

    # -- reads ---------------------------------------------------------------
    def stat(self, loc: Location, checksums: bool = True) -> ObjectInfo:
        if loc.key == "" or loc.key.endswith("/"):
            raise NotFound(f"{loc} is a prefix, not an object")
        self.check_key(loc)
        headers, query = self._read_request(loc, None)
        if checksums:
            headers["x-amz-checksum-mode"] = "ENABLED"
        try:
            resp = self._call("HEAD", loc, str(loc), query=query, headers=headers)
        except NotFound:
            self._check_bucket(loc)
            raise
        self.counters.add(requests=1)
        info = self.info_from(loc, _fields_from_headers(resp.headers), "")
        info.checksums_known = checksums
        return info

    def part_size(self, loc: Location, etag: Optional[str] = None) -> Optional[int]:
        """The size of part 1 (HeadObject with partNumber=1), or None when the server does not say."""
        headers, query = self._read_request(loc, etag)
        try:
            resp = self.wire.call("HEAD", loc.bucket, loc.key, query=dict(query or {}, partNumber="1"),
                                  headers=headers)
        except WireError:
            return None
        self.counters.add(requests=1)
        fields = _fields_from_headers(resp.headers)
        if not fields.get("PartsCount"):
            return None
        return int(fields["ContentLength"])

    def _check_bucket(self, loc: Location) -> None:
        """Tell a missing bucket apart from a missing key (HEAD gives both as 404)."""
        try:
            self.wire.call("HEAD", loc.bucket, headers=self.payer_header())
        except WireError as exc:
            err = translate(exc, f"s3://{loc.bucket}")
            if isinstance(err, NotFound):
                raise NotFound(f"{loc}: bucket {loc.bucket!r} does not exist") from None

    def info_from(self, loc: Location, resp: Dict[str, Any], relative: str) -> ObjectInfo:
        sums = {name: resp[f"Checksum{wire}"] for name, wire in WIRE.items() if resp.get(f"Checksum{wire}")}
        return ObjectInfo(
            location=Location("s3", loc.bucket, loc.key, version_id=loc.version_id),
            size=int(resp.get("ContentLength", resp.get("Size", 0))),
            etag=_etag(resp.get("ETag")),
            version_id=resp.get("VersionId"),
            mtime=resp.get("LastModified"),
            relative=relative,
            checksums=sums,
            checksum_type=resp.get("ChecksumType"),
            parts_count=resp.get("PartsCount"),
            sse=resp.get("ServerSideEncryption"),
        )

    def list(self, prefix: Location) -> Iterator[ObjectInfo]:
        base = prefix.key if (prefix.key == "" or prefix.key.endswith("/")) else prefix.key + "/"
        try:
            for page in self._pages(prefix.bucket, base):
                self.counters.add(requests=1)
                for obj in page:
                    key = obj["Key"]
                    if key.endswith("/") and obj.get("Size", 0) == 0:
                        continue  # a "folder" marker object
                    yield self.info_from(Location("s3", prefix.bucket, key), obj, key[len(base):])
        except WireError as exc:
            err = translate(exc, str(prefix))
            if isinstance(err, NotFound) and "bucket" not in str(err):
                err = NotFound(f"{prefix}: bucket {prefix.bucket!r} does not exist")
            raise err from None

    def _pages(self, bucket: str, base: str) -> Iterator[List[Dict[str, Any]]]:
        """ListObjectsV2 pages parsed from the XML (keys URL-encoded on the wire, so keys with
        characters XML cannot carry survive)."""
        token: Optional[str] = None
        while True:
            query: Dict[str, Optional[str]] = {"list-type": "2", "prefix": base, "encoding-type": "url"}
            if token:
                query["continuation-token"] = token
            resp = self.wire.call("GET", bucket, query=query, headers=self.payer_header())
            root = _xml(resp.body, f"s3://{bucket}/{base}")
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

    def read_async(self, loc: Location, start: int, length: int, consume: Consume, done: Done,
                   etag: Optional[str] = None) -> Pending:
        """One ranged GET: pieces go to ``consume`` and the outcome to ``done``, both on the wire
        thread; a 416 (an empty object) counts as success."""
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
        call = self.wire.submit(Call("GET", loc.bucket, loc.key, query=query, headers=headers,
                                     on_piece=piece, on_done=finished))
        return _Call(self.wire, call)

    def iter_range(self, loc: Location, start: int, length: int, etag: Optional[str] = None,
                   chunk: int = 1 << 20) -> Iterator[bytes]:
        """Windows of the range as successive GETs, the next in flight while one is consumed,
        so a reader that stops early leaves at most two windows behind."""
        if length <= 0:
            return
        window = min(max(chunk, 8 << 20), 64 << 20)
        spans = [(s, min(window, start + length - s)) for s in range(start, start + length, window)]
        inflight: List[Tuple[Pending, threading.Event, List[Any]]] = []

        def launch(s: int, n: int) -> None:
            pieces: List[Any] = []
            event = threading.Event()

            def done(err: Optional[BaseException]) -> None:
                pieces.append(err)
                event.set()

            pending = self.read_async(loc, s, n, lambda p: pieces.append(bytes(p)), done, etag)
            inflight.append((pending, event, pieces))

        try:
            for i, (s, n) in enumerate(spans):
                while len(inflight) < 2 and i + len(inflight) < len(spans):
                    launch(*spans[i + len(inflight)])
                _, event, pieces = inflight.pop(0)
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
            for pending, _, _ in inflight:
                pending.cancel(TransferFailed("read abandoned"))

    # -- writes --------------------------------------------------------------
    def _create_upload(self, loc: Location, algorithm: Optional[str]) -> Tuple[str, bool]:
        """CreateMultipartUpload: (upload id, whether the server took the checksum algorithm)."""
        started = time.time()
        headers = self.write_headers()
        if algorithm:
            headers["x-amz-checksum-algorithm"] = WIRE[algorithm]
            headers["x-amz-checksum-type"] = "FULL_OBJECT"
        resp = self.wire.call("POST", loc.bucket, loc.key, query={"uploads": None}, headers=headers)
        root = _xml(resp.body, str(loc))
        upload_id = root.findtext(f"{_ns(root)}UploadId")
        if not upload_id:
            raise TransferFailed(f"{loc}: the server started no multipart upload (no UploadId in its answer)")
        self.counters.add(requests=1)
        if resp.sent > 1:  # an earlier try reached the server: it may have begun an upload whose answer was lost
            self._abort_orphans(loc, upload_id, started)
        return upload_id, bool(resp.headers.get("x-amz-checksum-algorithm"))

    def _abort_orphans(self, loc: Location, ours: str, since: float) -> None:
        """Abort the uploads of ``loc`` begun since ``since`` other than ``ours`` (the lost
        answers of our own retried CreateMultipartUpload). Another writer of the same key at
        the same moment would lose its upload: two writers of one key lose anyway."""
        try:
            resp = self.wire.call("GET", loc.bucket, query={"uploads": None, "prefix": loc.key},
                                  headers=self.payer_header())
            root = _xml(resp.body, str(loc))
        except (WireError, TransferFailed):
            return
        ns = _ns(root)
        for item in root.iter(f"{ns}Upload"):
            key, upload_id = item.findtext(f"{ns}Key"), item.findtext(f"{ns}UploadId")
            initiated = _parse_time(item.findtext(f"{ns}Initiated") or "")
            if initiated is not None and abs(initiated - time.time()) > 86400:
                initiated = None  # a store whose clock says nothing useful (moto answers a fixed 2010 date)
            if key == loc.key and upload_id and upload_id != ours and (initiated is None or initiated >= since - 60):
                log.info("%s: aborting upload %s, begun by a try whose answer was lost", loc, upload_id)
                self.abort_upload({"bucket": loc.bucket, "key": loc.key, "upload_id": upload_id})

    def begin_upload(self, loc: Location, size: int, parts: int = 1,
                     resume_path: Optional[str] = None) -> Upload:
        self.check_key(loc)
        if parts <= 1:
            return S3PutUpload(self, loc)
        algorithm = self.config.checksum_algorithm if self.config.verify else None
        try:
            if algorithm and self.full_object_ok is not False:
                try:
                    upload_id, honoured = self._with_checksums(lambda: self._create_upload(loc, algorithm))
                except WireError as exc:
                    if not self.refuses_checksums(exc):
                        raise
                    self.refused()
                else:
                    if not honoured:
                        # Accepted but not honoured (the answer names no algorithm): a server without
                        # checksum support; its parts are checked by Content-MD5 and ETag instead.
                        self.full_object_ok = False
                    return S3Upload(self, loc, upload_id, algorithm if honoured else None)
            upload_id, _ = self._create_upload(loc, None)
        except WireError as exc:
            raise translate(exc, str(loc)) from None
        return S3Upload(self, loc, upload_id, None)

    def delete(self, loc: Location) -> None:
        try:
            self.wire.call("DELETE", loc.bucket, loc.key, headers=self.payer_header())
        except WireError as exc:
            err = translate(exc, str(loc))
            if not isinstance(err, NotFound):
                raise err from None
        self.counters.add(requests=1)

    def abort_upload(self, entry: Dict[str, str]) -> None:
        """AbortMultipartUpload, best effort (the upload may already be gone)."""
        try:
            self.wire.call("DELETE", entry["bucket"], entry["key"], query={"uploadId": entry["upload_id"]},
                           headers=self.payer_header())
        except Exception as exc:  # best effort: never masks the error that led here
            log.debug("abort of upload %s of s3://%s/%s: %s", entry.get("upload_id"), entry.get("bucket"),
                      entry.get("key"), exc)


__all__ = ["S3Store", "S3Upload", "S3PutUpload", "WIRE", "translate"]
