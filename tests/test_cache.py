"""The node-level reference cache: identity, verification, links, eviction, damage, the cache command."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import genostage
from genostage.job.cache import Cache, cache_key, reflink_supported, resolve_link
from genostage.config import TransferConfig
from genostage.store import Stores
from genostage.location import parse

from .cache_helpers import counting, counting_server  # noqa: F401  (fixtures)
from .helpers import genostage as run_cli

CONFIG = dict(part_size="5MiB", multipart_threshold="5MiB", download_part_size="5MiB")
LINKS = ["copy", "hardlink", "auto", "reflink"]
# Where to try copy-on-write clones: the temp dir, or e.g. an XFS (reflink=1) or btrfs mount.
REFLINK_DIR = os.environ.get("GENOSTAGE_TEST_REFLINK_DIR") or tempfile.gettempdir()


@pytest.fixture
def base(request, tmp_path):  # type: ignore[no-untyped-def]
    """The test's directory: on a file system that can clone files when the test is about reflinks."""
    if request.node.callspec.params.get("link") != "reflink":
        yield tmp_path
        return
    if not reflink_supported(REFLINK_DIR, REFLINK_DIR):
        pytest.skip(f"{REFLINK_DIR} cannot clone files (set GENOSTAGE_TEST_REFLINK_DIR to an XFS or btrfs mount)")
    path = Path(tempfile.mkdtemp(prefix="genostage-reflink-test-", dir=REFLINK_DIR))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def job(tmp_path, client, cache):  # type: ignore[no-untyped-def]
    return genostage.Job(scratch_root=str(tmp_path / "scratch"), cache=cache, s3_client=client,
                         config=TransferConfig(**CONFIG), show_progress=False)


def put_refs(client, bucket, files):  # type: ignore[no-untyped-def]
    for key, data in files.items():
        client.put_object(Bucket=bucket, Key=key, Body=data)


def entry_files(cache: Cache):  # type: ignore[no-untyped-def]
    return {e.uri: Path(e.path, "data").read_bytes() for e in cache.entries() if e.complete}


@pytest.mark.parametrize("link", LINKS)
def test_second_job_is_served_from_the_cache(counting, base, link):
    tmp_path = base
    _, app, client, bucket = counting
    files = {"refs/hg/genome.fa": os.urandom(7 << 20), "refs/hg/genome.fa.fai": b"chr1\t10\n"}
    put_refs(client, bucket, files)
    cache = Cache(tmp_path / "cache", link=link)
    seen = []
    for _ in range(2):
        with job(tmp_path, client, cache) as j:
            ref = j.ref(f"s3://{bucket}/refs/hg/", name="hg")
            seen.append({p.name: p.read_bytes() for p in ref.iterdir()})
            mode = os.stat(ref / "genome.fa").st_mode & 0o777
            assert mode == 0o444
            effective = resolve_link(link, cache.entries_dir, str(ref))
            assert os.stat(ref / "genome.fa.fai").st_nlink == (2 if effective == "hardlink" else 1)
        summaries = j.manifest["cache"]
        assert j.manifest["references"] == ["hg"]
    assert seen[0] == seen[1] == {"genome.fa": files["refs/hg/genome.fa"], "genome.fa.fai": files["refs/hg/genome.fa.fai"]}
    assert app.bytes_under(f"/{bucket}/refs/") == sum(len(d) for d in files.values())  # fetched once
    assert summaries[0]["hit"] == 2 and summaries[0]["downloaded"] == 0
    assert entry_files(cache) == {f"s3://{bucket}/{k}": v for k, v in files.items()}
    assert all(os.stat(os.path.join(e.path, "data")).st_mode & 0o777 == 0o444 for e in cache.entries())


def test_ref_without_a_cache_is_a_read_only_input(counting, tmp_path):
    _, app, client, bucket = counting
    put_refs(client, bucket, {"r/x.fa": b">x\nAC\n"})
    with job(tmp_path, client, None) as j:
        x = j.ref(f"s3://{bucket}/r/x.fa")
        assert x.read_bytes() == b">x\nAC\n" and os.stat(x).st_mode & 0o777 == 0o444
    assert "cache" not in j.manifest and j.manifest["references"] == ["ref1"]


def test_replaced_object_is_fetched_again(counting, tmp_path):
    _, app, client, bucket = counting
    cache = Cache(tmp_path / "cache")
    got = []
    for body in (b"version one\n", b"version two, longer\n", b"version one\n"[::-1]):
        put_refs(client, bucket, {"r/db.txt": body})
        with job(tmp_path, client, cache) as j:
            got.append(j.ref(f"s3://{bucket}/r/db.txt").read_bytes())
    assert got == [b"version one\n", b"version two, longer\n", b"version one\n"[::-1]]
    assert app.bytes_under(f"/{bucket}/r/") == 12 + 20 + 12
    assert len(cache.entries()) == 3  # each version is its own entry (until evicted)


def test_entry_is_not_served_when_the_store_reports_another_checksum(counting, tmp_path):
    _, app, client, bucket = counting
    body = os.urandom(1000)
    client.put_object(Bucket=bucket, Key="r/a.bin", Body=body, ChecksumAlgorithm="CRC64NVME")
    cache = Cache(tmp_path / "cache")
    with job(tmp_path, client, cache) as j:
        j.ref(f"s3://{bucket}/r/a.bin")
    (entry,) = cache.entries()
    meta_path = os.path.join(entry.path, "meta.json")
    meta = json.loads(Path(meta_path).read_text())
    assert meta["checksums"]["crc64nvme"] == meta["store_checksums"]["crc64nvme"]
    meta["checksums"]["crc64nvme"] = "AAAAAAAAAAA="  # what we recorded no longer matches the store
    Path(meta_path).write_text(json.dumps(meta))
    with job(tmp_path, client, cache) as j:
        assert j.ref(f"s3://{bucket}/r/a.bin").read_bytes() == body
    assert j.manifest["cache"][0]["downloaded"] == 1
    assert app.bytes_under(f"/{bucket}/r/") == 2000
    (entry,) = cache.entries()
    assert json.loads(Path(entry.path, "meta.json").read_text())["checksums"]["crc64nvme"] == meta["store_checksums"]["crc64nvme"]


def test_damaged_data_file_is_not_served(counting, tmp_path):
    _, app, client, bucket = counting
    put_refs(client, bucket, {"r/a.txt": b"ACGT" * 100})
    cache = Cache(tmp_path / "cache")
    with job(tmp_path, client, cache) as j:
        j.ref(f"s3://{bucket}/r/a.txt")
    data = os.path.join(cache.entries()[0].path, "data")
    os.chmod(data, 0o644)
    with open(data, "r+b") as fh:
        fh.write(b"NNNN")
    os.chmod(data, 0o444)
    with job(tmp_path, client, cache) as j:
        assert j.ref(f"s3://{bucket}/r/a.txt").read_bytes() == b"ACGT" * 100
    assert j.manifest["cache"][0]["downloaded"] == 1


def _lease(cache, client, bucket, key, dest_dir):  # type: ignore[no-untyped-def]
    stores = Stores(TransferConfig(**CONFIG), client)
    info = stores.s3.stat(parse(f"s3://{bucket}/{key}"))
    return cache.lease(stores, [(info, parse(os.path.join(dest_dir, key.replace("/", "_"))))], show_progress=False)


def test_eviction_removes_least_recently_used_unused_entries_only(counting, tmp_path):
    _, app, client, bucket = counting
    size = 100_000
    put_refs(client, bucket, {f"r/{n}": bytes([65 + i]) * size for i, n in enumerate("abcde")})
    cache = Cache(tmp_path / "cache", max_size=3 * size)
    held = _lease(cache, client, bucket, "r/a", tmp_path / "j1")  # oldest, but in use for the whole test
    for n in "bc":
        _lease(cache, client, bucket, f"r/{n}", tmp_path / "j2").release()
    assert [e.uri.rsplit("/", 1)[1] for e in cache.entries()] == ["a", "b", "c"]
    _lease(cache, client, bucket, "r/b", tmp_path / "j3").release()  # b is now more recent than c
    _lease(cache, client, bucket, "r/d", tmp_path / "j4").release()  # over the limit: c goes, not a (in use)
    assert sorted(e.uri.rsplit("/", 1)[1] for e in cache.entries()) == ["a", "b", "d"]
    _lease(cache, client, bucket, "r/e", tmp_path / "j5").release()
    assert sorted(e.uri.rsplit("/", 1)[1] for e in cache.entries()) == ["a", "d", "e"]
    assert [e.in_use for e in cache.entries() if e.uri.endswith("/a")] == [True]
    held.release()
    cache.prune(size)
    assert [e.uri.rsplit("/", 1)[1] for e in cache.entries()] == ["e"]


def test_cache_over_the_limit_keeps_entries_in_use(counting, tmp_path):
    _, app, client, bucket = counting
    put_refs(client, bucket, {"r/a": b"a" * 5000, "r/b": b"b" * 5000})
    cache = Cache(tmp_path / "cache", max_size=6000)
    first = _lease(cache, client, bucket, "r/a", tmp_path / "j1")
    second = _lease(cache, client, bucket, "r/b", tmp_path / "j2")  # both live: nothing can go
    assert len(cache.entries()) == 2 and all(e.in_use for e in cache.entries())
    first.release()
    second.release()


@pytest.mark.parametrize("link", ["auto", "copy", "hardlink", "reflink"])
def test_a_tool_writing_into_its_reference_does_not_change_the_cache(counting, base, link):
    """auto/copy: the tool writes into its own copy. hardlink as root (the kernel lets root write a 0444
    file): the write reaches the cached inode, is detected when the job ends, and the entry is removed,
    so no later job is served the damaged bytes."""
    tmp_path = base
    _, app, client, bucket = counting
    original = b">chr1\nACGTACGT\n"
    put_refs(client, bucket, {"r/g.fa": original})
    cache_dir = tmp_path / "cache"
    common = ["run", "--scratch", str(tmp_path / "scratch"), "--cache", str(cache_dir), "--cache-link", link,
              "-r", f"g=s3://{bucket}/r/g.fa"]
    r = run_cli([*common, "--shell", "--", "chmod u+w {g}; echo DAMAGE >> {g}; cat {g}"])
    assert r.returncode == 0, r.stderr
    assert "DAMAGE" in r.stdout + r.stderr  # the tool did write into its input
    cache = Cache(cache_dir)
    effective = link if link != "auto" else resolve_link("auto", cache.entries_dir, str(tmp_path))
    if effective == "hardlink" and os.geteuid() == 0:
        assert "was changed while in use" in r.stderr and cache.entries() == []
    else:
        assert entry_files(cache) == {f"s3://{bucket}/r/g.fa": original}
    r = run_cli([*common, "--", "cat", "{g}"])
    assert r.returncode == 0 and "[stdout] ACGTACGT" in r.stderr and "DAMAGE" not in r.stderr


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to switch to nobody")
def test_as_non_root_a_hard_linked_reference_cannot_be_written(counting, tmp_path):
    _, app, client, bucket = counting
    put_refs(client, bucket, {"r/g.fa": b">chr1\nACGT\n"})
    shared = tempfile.mkdtemp(prefix="genostage-nobody-")
    os.chmod(shared, 0o777)
    try:
        cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "genostage",
               "run", "--scratch", f"{shared}/scratch", "--cache", f"{shared}/cache",
               "-r", f"g=s3://{bucket}/r/g.fa", "--shell", "--",
               "echo DAMAGE >> {g} || echo REFUSED; [ $(stat -c %h {g}) = 2 ] && echo LINKED"]
        env = {**os.environ, "HOME": shared}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, cwd=shared)
        assert r.returncode == 0, r.stderr
        assert "REFUSED" in r.stderr and "LINKED" in r.stderr and "Permission denied" in r.stderr
        data = [os.path.join(d, "data") for d, _, f in os.walk(f"{shared}/cache/entries") if "data" in f]
        assert [Path(p).read_bytes() for p in data] == [b">chr1\nACGT\n"]
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_cache_command_ls_du_verify_prune(counting, tmp_path):
    _, app, client, bucket = counting
    put_refs(client, bucket, {"r/a.fa": b"A" * 3000, "r/b.fa": b"B" * 2000})
    cache_dir = tmp_path / "cache"
    cache = Cache(cache_dir)
    held = _lease(cache, client, bucket, "r/a.fa", tmp_path / "j1")
    _lease(cache, client, bucket, "r/b.fa", tmp_path / "j2").release()
    r = run_cli(["cache", "ls", str(cache_dir)])
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[-1]: ln for ln in r.stdout.splitlines()[1:]}
    assert str(os.getpid()) in lines[f"s3://{bucket}/r/a.fa"] and "2.9 KiB" in lines[f"s3://{bucket}/r/a.fa"]
    assert " - " in lines[f"s3://{bucket}/r/b.fa"]
    r = run_cli(["cache", "du", str(cache_dir)])
    assert r.returncode == 0 and "(5000 bytes)" in r.stdout and "2.9 KiB in use" in r.stdout
    assert run_cli(["cache", "verify", str(cache_dir)]).returncode == 0
    # silent corruption (same size, mtime put back): only a full re-read finds it
    data = os.path.join([e for e in cache.entries() if e.uri.endswith("b.fa")][0].path, "data")
    st = os.stat(data)
    os.chmod(data, 0o644)
    with open(data, "r+b") as fh:
        fh.write(b"X")
    os.chmod(data, 0o444)
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = run_cli(["cache", "verify", str(cache_dir)])
    assert r.returncode == 6 and "DAMAGED" in r.stdout and "b.fa" in r.stdout, r.stdout + r.stderr
    assert [e.uri for e in cache.entries()] == [f"s3://{bucket}/r/a.fa"]
    r = run_cli(["cache", "prune", "--all", str(cache_dir)])
    assert r.returncode == 0 and "removed 0 entries" in r.stdout  # a.fa is in use
    held.release()
    r = run_cli(["cache", "prune", "--all", str(cache_dir)])
    assert r.returncode == 0 and "removed 1 entries" in r.stdout and Cache(cache_dir).entries() == []
    r = run_cli(["cache", "ls", str(tmp_path)])
    assert r.returncode == 3 and "not a genostage cache" in r.stderr


def test_cache_prune_without_a_limit_removes_nothing(counting, tmp_path):
    """Before: ``cache prune DIR`` meant --max-size 0 and emptied the cache."""
    _, app, client, bucket = counting
    put_refs(client, bucket, {"r/a.fa": b"A" * 3000, "r/b.fa": b"B" * 2000})
    cache_dir = tmp_path / "cache"
    cache = Cache(cache_dir)
    for key in ("r/a.fa", "r/b.fa"):
        _lease(cache, client, bucket, key, tmp_path / "j").release()
    r = run_cli(["cache", "prune", str(cache_dir)])
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "--max-size SIZE" in r.stderr and "--all" in r.stderr
    assert len(cache.entries()) == 2
    r = run_cli(["cache", "prune", "--max-size", "2500", str(cache_dir)])  # the least recently used goes
    assert r.returncode == 0 and [e.uri for e in cache.entries()] == [f"s3://{bucket}/r/b.fa"]
    r = run_cli(["cache", "prune", "--max-size", "-5", str(cache_dir)])
    assert r.returncode == 2 and "--max-size: a size cannot be negative" in r.stderr
    r = run_cli(["cache", "ls", "--all", str(cache_dir)])
    assert r.returncode == 2 and "unrecognized arguments: --all" in r.stderr  # an option of prune only
    assert len(cache.entries()) == 1


def test_cache_commands_default_to_genostage_cache(counting, tmp_path):
    """Before: DIR was required, although ``run`` reads the cache from $GENOSTAGE_CACHE."""
    _, app, client, bucket = counting
    put_refs(client, bucket, {"r/a.fa": b"A" * 3000})
    cache_dir = tmp_path / "cache"
    _lease(Cache(cache_dir), client, bucket, "r/a.fa", tmp_path / "j").release()
    env = {"GENOSTAGE_CACHE": str(cache_dir)}
    r = run_cli(["cache", "ls"], env=env)
    assert r.returncode == 0 and f"s3://{bucket}/r/a.fa" in r.stdout, r.stderr
    r = run_cli(["cache", "du"], env=env)
    assert r.returncode == 0 and "(3000 bytes)" in r.stdout
    r = run_cli(["cache", "verify"], env=env)
    assert r.returncode == 0 and "1 entries verified" in r.stdout
    r = run_cli(["cache", "ls", str(tmp_path)], env=env)  # DIR given wins over the variable
    assert r.returncode == 3 and "not a genostage cache" in r.stderr
    r = run_cli(["cache", "prune", "--all"], env=env)
    assert r.returncode == 0 and "removed 1 entries" in r.stdout and Cache(cache_dir).entries() == []
    for action in ("ls", "du", "prune", "verify"):
        r = run_cli(["cache", action, *(["--all"] if action == "prune" else [])], env={"GENOSTAGE_CACHE": ""})
        assert r.returncode == 2 and r.stderr.strip() == f"genostage: cache {action}: which cache? give DIR or set GENOSTAGE_CACHE"


def test_cache_has_the_public_methods_a_lease_uses(counting, tmp_path):
    """entry_dir, read_meta, discard: what Lease (and a maintainer's script) may call."""
    _, app, client, bucket = counting
    put_refs(client, bucket, {"r/a.fa": b"A" * 100})
    cache = Cache(tmp_path / "cache")
    _lease(cache, client, bucket, "r/a.fa", tmp_path / "j").release()
    (entry,) = cache.entries()
    assert cache.entry_dir(entry.key) == entry.path
    assert cache.read_meta(entry.path)["uri"] == f"s3://{bucket}/r/a.fa"
    cache.discard(entry.path)
    assert cache.entries() == [] and cache.read_meta(entry.path) is None
    with pytest.raises(TypeError):
        cache.prune()  # type: ignore[call-arg]  # emptying the cache is asked for, never implied


def test_a_reference_name_cannot_also_be_an_input(counting, tmp_path):
    r = run_cli(["run", "--scratch", str(tmp_path), "-r", "g=s3://bkt/a", "-i", "g=s3://bkt/b", "--", "true"])
    assert r.returncode == 2 and "name used twice" in r.stderr


def test_keys_follow_object_identity():
    from genostage.store import ObjectInfo

    loc = parse("s3://bkt/r/a")
    base = cache_key(ObjectInfo(loc, 10, etag='"abc"'))
    assert base == cache_key(ObjectInfo(loc, 10, etag="abc"))
    assert len({base, cache_key(ObjectInfo(loc, 11, etag="abc")), cache_key(ObjectInfo(loc, 10, etag="abd")),
                cache_key(ObjectInfo(loc, 10, etag="abc", version_id="v2")),
                cache_key(ObjectInfo(parse("s3://bkt/r/b"), 10, etag="abc"))}) == 5


def test_free_space_preflight_counts_unused_cache_entries_as_reclaimable(counting, tmp_path, monkeypatch):
    """Scratch and cache share a (pretend 300 kB) disk: an input that does not fit evicts unused references."""
    import genostage.job.cache as cache_mod
    from genostage import fsutil

    _, app, client, bucket = counting
    put_refs(client, bucket, {"r/old": b"o" * 100_000, "r/new": b"n" * 100_000, "in/sample": b"s" * 150_000})
    cache = Cache(tmp_path / "cache")
    for name in ("old", "new"):
        with job(tmp_path, client, cache) as j:
            j.ref(f"s3://{bucket}/r/{name}")

    def fake_free(path: str) -> int:
        scratch = sum(p.stat().st_size for p in (tmp_path / "scratch").rglob("*")
                      if p.is_file() and p.stat().st_nlink == 1)  # hard links share the cache's blocks
        return 300_000 - cache.total_size() - scratch
    monkeypatch.setattr(cache_mod, "free_bytes", fake_free)
    monkeypatch.setattr(fsutil, "free_bytes", fake_free)
    with job(tmp_path, client, cache) as j:
        assert j.input(f"s3://{bucket}/in/sample").stat().st_size == 150_000
    assert [e.uri for e in cache.entries()] == [f"s3://{bucket}/r/new"]  # the least recently used went
    with pytest.raises(genostage.InsufficientSpace):
        with job(tmp_path, client, cache) as j:
            j.ref(f"s3://{bucket}/r/new")  # held by this job: cannot be evicted
            j.input(f"s3://{bucket}/in/sample")
            j.input(f"s3://{bucket}/in/sample", name="again")
