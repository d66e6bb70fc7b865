"""Streamed inputs and outputs (``run --stream NAME``) under network faults and signals.

A streamed input reaches the tool through a FIFO in scratch while it downloads; a streamed
output is uploaded as the tool writes it. The tool reads what it is given, so a fault can only
be cured before the bytes reach the pipe. The one acceptable outcome of each case: the tool saw
the right bytes (exit 0, the output equals the source), or the job failed with the documented
exit code and one line, nothing published but the manifest, no multipart upload left open, no
scratch directory and no process of the job left; an object already at a streamed output's key
stays as it was when the job fails.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

import pytest

from tests.fastq_util import pair

from .harness import MULTI, PART, Child, Lab, cli, last_line_error, leftovers, ok, seeded_bytes
from .proxy import Rule

BOTH = pytest.mark.parametrize("lab", ["moto", "rclone"], indirect=True)
MOTO = pytest.mark.parametrize("lab", ["moto"], indirect=True)


def run_cmd(lab: Lab, *args: str) -> List[str]:
    return ["-q", "run", "--scratch", str(lab.tmp / "scratch"), "--grace", "2", *PART, *args]


def scratch_procs(lab: Lab) -> List[str]:
    """Processes still working in (or naming) this test's scratch root: the job's tool left behind."""
    root = str(lab.tmp / "scratch")
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as fh:
                state = fh.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and (cwd.startswith(root) or root in cmdline):
            found.append(f"{pid}: {cmdline.strip()} (cwd {cwd})")
    return found


def nothing_published(lab: Lab, prefix: str) -> None:
    """No object under ``prefix`` but the manifest, no open upload, no scratch, no process left."""
    assert [k for k in lab.keys(prefix) if not k.endswith("manifest.json")] == [], lab.keys(prefix)
    assert any(k.endswith("manifest.json") for k in lab.keys(prefix)), f"no manifest under {prefix}"
    lab.assert_clean()
    clean_scratch(lab)


def clean_scratch(lab: Lab) -> None:
    scratch = lab.tmp / "scratch"
    assert not scratch.exists() or leftovers(scratch) == [], leftovers(scratch)
    deadline = time.monotonic() + 3
    while scratch_procs(lab) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert scratch_procs(lab) == [], scratch_procs(lab)


def injected(lab: Lab, fault: str) -> None:
    assert lab.proxy.count(fault) >= 1, f"the {fault} fault was not injected: {dict(lab.proxy.seen)}"


# -- 1. a streamed input through the proxy ---------------------------------------------
def stream_in(lab: Lab, data: bytes, prefix: str, timeout: float = 90.0, tool: str = "cat {x} > {y}") -> Any:
    """``cat`` of the streamed input into a staged output; the job's result."""
    lab.upload(f"{prefix}/in.bin", data)  # genostage's checksums (per-part and full CRC64NVME on moto)
    return prefix, lambda: cli(run_cmd(lab, "-i", f"x={lab.uri(prefix + '/in.bin')}", "--stream", "x",
                                       "-o", f"y={lab.uri(prefix + '/out/y.bin')}", "--shell", "--", tool),
                               lab.env, timeout=timeout)


def tool_saw_the_source(lab: Lab, r: Any, prefix: str, data: bytes) -> None:
    ok(r)
    got = lab.get(f"{prefix}/out/y.bin")
    assert got is not None and len(got) == len(data) and got == data, \
        f"the tool saw {len(got or b'')} bytes, not the source's {len(data)} (exit 0)"
    lab.assert_clean()
    clean_scratch(lab)


def failed_cleanly(lab: Lab, r: Any, prefix: str, code: int, match: Optional[str] = None) -> None:
    last_line_error(r, code, match)
    nothing_published(lab, f"{prefix}/out/")


# Where a flipped bit can be cured before the tool reads it: nowhere yet. Both servers give a
# whole-object value only (moto the full-object CRC64NVME genostage uploaded, rclone an MD5 or
# multipart ETag), so a bad part is found once the tool has it: the job fails (exit 6), nothing
# published. (Curing it would need each part's own checksum before it enters the pipe.)
FLIP_CURED = {"moto": False, "rclone": False}


@BOTH
def test_flip_in_a_streamed_get(lab, chaos):
    chaos.tried("flip-get", f"run --stream input, a bit flipped in a part's GET, {lab.kind}")
    data = seeded_bytes(MULTI, 101)
    prefix, go = stream_in(lab, data, "sf")
    lab.proxy.add(Rule("flip", op="GetObject", nth=[2], at=0.7))
    r = go()
    injected(lab, "flip")
    if FLIP_CURED[lab.kind]:
        tool_saw_the_source(lab, r, prefix, data)
    else:
        failed_cleanly(lab, r, prefix, 6, r"in\.bin")


@BOTH
def test_flip_in_a_streamed_get_of_an_md5_only_object(lab, chaos):
    """An object another tool put (one PUT: its ETag is the MD5 of the whole body) and a single GET:
    the mismatch is known only once the tool has every byte; the job fails (exit 6) on both servers."""
    chaos.tried("flip-get", f"run --stream input of an MD5-only object, a bit flipped, {lab.kind}")
    data = seeded_bytes(3 << 20, 102)
    lab.put("sm/in.bin", data)
    lab.proxy.add(Rule("flip", op="GetObject", nth=[1], at=0.3))
    r = cli(run_cmd(lab, "-i", f"x={lab.uri('sm/in.bin')}", "--stream", "x", "-o", f"y={lab.uri('sm/out/y.bin')}",
                    "--shell", "--", "cat {x} > {y}"), lab.env)
    injected(lab, "flip")
    failed_cleanly(lab, r, "sm", 6, r"in\.bin: md5 mismatch")  # the one value is the whole body's


@BOTH
@pytest.mark.parametrize("fault", ["reset", "truncate"])
def test_streamed_get_cut_short(lab, fault, chaos):
    chaos.tried(fault, f"run --stream input, a part's GET body cut off ({fault}), {lab.kind}")
    data = seeded_bytes(MULTI, 103)
    prefix, go = stream_in(lab, data, "sc")
    lab.proxy.add(Rule(fault, op="GetObject", nth=[1, 3], at=0.6))
    r = go()
    injected(lab, fault)
    tool_saw_the_source(lab, r, prefix, data)


@BOTH
def test_streamed_get_stalled_briefly(lab, chaos):
    chaos.tried("stall", f"run --stream input, GETs stalled 1.5 s (below the read timeout), {lab.kind}")
    data = seeded_bytes(MULTI, 104)
    prefix, go = stream_in(lab, data, "ss")
    lab.proxy.add(Rule("stall", op="GetObject", nth=[1, 2], seconds=1.5))
    r = go()
    injected(lab, "stall")
    tool_saw_the_source(lab, r, prefix, data)


@MOTO
def test_streamed_get_stalled_past_the_read_timeout(lab, chaos):
    """No answer for longer than the 60 s read timeout (no setting shortens it from the command
    line). The request is abandoned at 60 s and tried once more (the retry budget, 60 s from
    the first try, is spent, but a first try always gets a second), and the job succeeds; it
    used to hang for ever (the parts after the stalled one waited in the pipe, the engine
    waited for them), then, once that was fixed, to fail with exit 5 without a retry."""
    chaos.tried("stall", "run --stream input, a GET stalled 65 s (past the 60 s read timeout), moto")
    data = seeded_bytes(MULTI, 105)
    prefix, go = stream_in(lab, data, "sl", timeout=150)
    lab.proxy.add(Rule("stall", op="GetObject", nth=[1], seconds=65))
    r = go()
    injected(lab, "stall")
    tool_saw_the_source(lab, r, prefix, data)
    assert r.seconds < 90, f"took {r.seconds:.0f} s"


@BOTH
@pytest.mark.parametrize("status,code,want", [(403, "AccessDenied", 4), (404, "NoSuchKey", 3)])
def test_streamed_get_refused_mid_object(lab, status, code, want, chaos):
    """The second part's GET is refused for good (the object's policy changed, or it was deleted,
    mid-stream): the job fails with that code at once; the parts held for the pipe do not keep it."""
    chaos.tried("throttle", f"run --stream input, the 2nd part's GET answered {status} {code}, {lab.kind}")
    data = seeded_bytes(MULTI, 109)
    prefix, go = stream_in(lab, data, f"sr{status}", timeout=60)
    lab.proxy.add(Rule("status", status=status, code=code, op="GetObject", nth=[2]))
    r = go()
    injected(lab, "status")
    failed_cleanly(lab, r, prefix, want, r"in\.bin")
    assert r.seconds < 30, f"took {r.seconds:.0f} s"


@MOTO
def test_streamed_get_crawling_mid_body(lab, chaos):
    """A body that stops moving after its headers (1 byte/s): the low-speed rule (10 s) abandons it."""
    chaos.tried("stall", "run --stream input, a GET body at 1 byte/s, moto")
    data = seeded_bytes(MULTI, 106)
    prefix, go = stream_in(lab, data, "sw", timeout=60)
    lab.proxy.add(Rule("slow", op="GetObject", nth=[2], rate=1.0))
    r = go()
    injected(lab, "slow")
    tool_saw_the_source(lab, r, prefix, data)


@BOTH
def test_streamed_get_in_a_slowdown_burst(lab, chaos):
    chaos.tried("throttle", f"run --stream input, every GET 503 SlowDown for 3 s, {lab.kind}")
    data = seeded_bytes(MULTI, 107)
    prefix, go = stream_in(lab, data, "sb")
    lab.proxy.add(Rule("status", status=503, op="GetObject", burst=3.0))
    r = go()
    injected(lab, "status")
    tool_saw_the_source(lab, r, prefix, data)


@BOTH
def test_streamed_get_every_other_one_500(lab, chaos):
    chaos.tried("throttle", f"run --stream input, every 2nd GET 500 InternalError, md5sum as the tool, {lab.kind}")
    data = seeded_bytes(MULTI, 108)
    prefix, go = stream_in(lab, data, "s5", tool="md5sum < {x} > {y}")
    lab.proxy.add(Rule("status", status=500, op="GetObject", every=2))
    r = go()
    injected(lab, "status")
    ok(r)
    assert (lab.get(f"{prefix}/out/y.bin") or b"").split()[0].decode() == hashlib.md5(data).hexdigest()
    lab.assert_clean()
    clean_scratch(lab)


# -- 2. a streamed output through the proxy --------------------------------------------
def stream_out(lab: Lab, data: bytes, prefix: str, timeout: float = 90.0) -> Any:
    src = lab.tmp / "src.bin"
    src.write_bytes(data)
    return cli(run_cmd(lab, "-o", f"y={lab.uri(prefix + '/out/y.bin')}", "--stream", "y", "--shell", "--",
                       f"cat {src} > {{y}}"), lab.env, timeout=timeout)


def published(lab: Lab, r: Any, prefix: str, data: bytes) -> None:
    ok(r)
    lab.assert_object(f"{prefix}/out/y.bin", data)
    lab.assert_clean()
    clean_scratch(lab)


@BOTH
def test_flip_in_a_streamed_upload_part(lab, chaos):
    chaos.tried("flip-put", f"run --stream output, a bit flipped in an UploadPart body, {lab.kind}")
    data = seeded_bytes(MULTI, 111)
    lab.proxy.add(Rule("flip_request", op="UploadPart", nth=[2], at=0.4))
    r = stream_out(lab, data, "of")
    injected(lab, "flip_request")
    if lab.kind == "moto" or r.code == 0:  # the part's ETag is not its MD5: the part is sent again
        published(lab, r, "of", data)
    else:  # rclone may refuse the part (BadDigest) and drop the whole upload: a stream cannot be sent again
        failed_cleanly(lab, r, "of", 5, r"y\.bin: the store dropped the multipart upload")


@BOTH
def test_streamed_upload_part_reset(lab, chaos):
    chaos.tried("reset", f"run --stream output, the connection reset during an UploadPart, {lab.kind}")
    data = seeded_bytes(MULTI, 112)
    lab.proxy.add(Rule("reset", op="UploadPart", nth=[1, 3]))
    r = stream_out(lab, data, "or")
    injected(lab, "reset")
    published(lab, r, "or", data)


@BOTH
@pytest.mark.parametrize("status", [500, 503])
def test_streamed_upload_complete_refused_once(lab, status, chaos):
    chaos.tried("throttle", f"run --stream output, CompleteMultipartUpload answered {status} once, {lab.kind}")
    data = seeded_bytes(MULTI, 113)
    lab.proxy.add(Rule("status", status=status, op="CompleteMultipartUpload", nth=[1]))
    r = stream_out(lab, data, "oc")
    injected(lab, "status")
    published(lab, r, "oc", data)


@BOTH
@pytest.mark.parametrize("op", ["UploadPart", "CompleteMultipartUpload", "CreateMultipartUpload"])
def test_streamed_upload_answer_lost(lab, op, chaos):
    chaos.tried("lost-answer", f"run --stream output, the {op} answer dropped after the server acted, {lab.kind}")
    data = seeded_bytes(MULTI, 114)
    lab.proxy.add(Rule("drop_answer", op=op, nth=[1]))
    r = stream_out(lab, data, "ol")
    injected(lab, "drop_answer")
    published(lab, r, "ol", data)


@BOTH
@pytest.mark.parametrize("how", ["every part corrupted", "complete denied", "tool fails"])
def test_a_failed_streamed_upload_keeps_the_object_there(lab, how, chaos):
    """The destination key holds an object already: a streamed upload that cannot be completed
    (every part's body corrupted, its completion refused, or the tool failing after it wrote
    two parts) leaves it exactly as it was."""
    chaos.tried("flip-put" if how.startswith("every") else "signal" if how == "tool fails" else "throttle",
                f"run --stream output over an existing object, {how}, {lab.kind}")
    old = seeded_bytes(1 << 20, 115)
    lab.put("ok/out/y.bin", old)
    data = seeded_bytes(MULTI, 116)
    src = lab.tmp / "src.bin"
    src.write_bytes(data)
    tool = f"cat {src} > {{y}}"
    if how == "every part corrupted":
        lab.proxy.add(Rule("flip_request", op="UploadPart"))
        want = 6 if lab.kind == "moto" else 5  # rclone drops the upload at the first bad part
    elif how == "complete denied":
        lab.proxy.add(Rule("status", status=403, code="AccessDenied", op="CompleteMultipartUpload"))
        want = 4
    else:
        tool = f"cat {src} > {{y}}; exit 3"
        want = 3
    r = cli(run_cmd(lab, "-o", f"y={lab.uri('ok/out/y.bin')}", "--stream", "y", "--shell", "--", tool), lab.env,
            timeout=150)
    if how != "tool fails":
        injected(lab, "flip_request" if how.startswith("every") else "status")
    last_line_error(r, want)
    assert lab.get("ok/out/y.bin") == old, "a failed streamed upload changed the object that was there"
    lab.assert_clean()
    clean_scratch(lab)


# -- 3. signals ------------------------------------------------------------------------
def hold(lab: Lab, **match: Any) -> None:
    lab.proxy.add(Rule("hold", **match))


def wait_held(lab: Lab, child: Child) -> None:
    child.wait_for(lab.proxy.holding.is_set, 30, "a request held by the proxy")


def tool_pid(marker: Path, child: Child) -> int:
    child.wait_for(lambda: marker.exists() and marker.read_text().strip() != "", 30, "the tool's pid")
    return int(marker.read_text())


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def held_mid_stream(lab: Lab, direction: str, prefix: str, seed: int, in_tool: str, out_tool: str,
                    *more: str) -> Tuple[List[str], Path]:
    """A job streaming its input (or its output) whose second part, the GET (or the UploadPart),
    the proxy holds and never lets go: its arguments, and the file the tool writes its pid to.
    The tool commands get ``{marker}`` (and ``{src}``, the output case's data) filled in."""
    data = seeded_bytes(MULTI, seed)
    marker = lab.tmp / "tool.pid"
    out = ["-o", f"y={lab.uri(prefix + 'out/y.bin')}"]
    if direction == "input":
        lab.upload(prefix + "in.bin", data)
        hold(lab, op="GetObject", nth=[2])
        args = ["-i", f"x={lab.uri(prefix + 'in.bin')}", "--stream", "x", *out, *more, "--shell", "--",
                in_tool.format(marker=marker)]
    else:
        src = lab.tmp / "src.bin"
        src.write_bytes(data)
        hold(lab, op="UploadPart", nth=[2])
        args = [*out, "--stream", "y", "--shell", "--", out_tool.format(marker=marker, src=src)]
    return run_cmd(lab, *args)[1:], marker


def stop_mid_stream(lab: Lab, args: List[str], marker: Path, stop: Callable[[Child, int], None]) -> Tuple[Any, float, int]:
    """Run the held job, ``stop(child, tool_pid)`` it: its result, the seconds it took to end, the tool's pid."""
    with Child(args, lab.env) as child:
        wait_held(lab, child)
        pid = tool_pid(marker, child)
        t0 = time.monotonic()
        stop(child, pid)
        r = child.finish(30)
        took = time.monotonic() - t0
    return r, took, pid


@BOTH
@pytest.mark.parametrize("direction", ["input", "output"])
def test_sigterm_mid_stream(lab, direction, chaos):
    """The proxy holds the second part (its GET, or its UploadPart) and never lets it go: the job
    must not wait for it."""
    chaos.tried("signal", f"run --stream {direction}, SIGTERM while a part is held mid-stream, {lab.kind}")
    args, marker = held_mid_stream(lab, direction, "gt/", 121, "echo $$ > {marker}; exec cat {{x}} > {{y}}",
                                   "echo $$ > {marker}; exec cat {src} > {{y}}")
    r, took, pid = stop_mid_stream(lab, args, marker, lambda child, pid: child.signal(signal.SIGTERM))
    last_line_error(r, 143)
    assert took < 8, f"exit 143 took {took:.1f} s after SIGTERM"
    assert gone(pid), f"the tool ({pid}) is still running"
    nothing_published(lab, "gt/out/")


@BOTH
@pytest.mark.parametrize("direction", ["input", "output"])
def test_tool_killed_mid_stream(lab, direction, chaos):
    """The tool dies of SIGKILL (the OOM killer) while a part is held mid-stream: its status is
    128+9, the streams end without waiting for the held part, and nothing is left."""
    chaos.tried("signal", f"run --stream {direction}, the tool SIGKILLed mid-stream, {lab.kind}")
    args, marker = held_mid_stream(lab, direction, "tk/", 122, "echo $$ > {marker}; exec cat {{x}} > {{y}}",
                                   "exec > {{y}}; echo $$ > {marker}; cat {src}; exec sleep 60", "--stream", "y")
    r, took, _pid = stop_mid_stream(lab, args, marker, lambda child, pid: os.kill(pid, signal.SIGKILL))
    last_line_error(r, 137)
    assert took < 8, f"the job took {took:.1f} s to end after its tool was killed"
    nothing_published(lab, "tk/out/")


# -- 4. a streamed chunk of a FASTQ plan -------------------------------------------------
def bgzf(data: bytes) -> bytes:
    return subprocess.run(["bgzip", "-c"], input=data, capture_output=True, check=True).stdout


def chunk_run(lab: Lab, stream: bool, tag: str) -> Any:
    args = ["-i", f"reads={lab.uri('fq/s.plan.json')}#2"]
    if stream:
        args += ["--stream", "reads"]
    return cli(run_cmd(lab, *args, "-o", f"a={lab.uri(f'fq/{tag}/a.fq.gz')}", "-o",
                       f"b={lab.uri(f'fq/{tag}/b.fq.gz')}", "--shell", "--",
                       "cat {reads.1} > {a} & p=$!; cat {reads.2} > {b}; wait $p"), lab.env)


def records(blob: Optional[bytes]) -> List[bytes]:
    assert blob is not None
    lines = gzip.decompress(blob).split(b"\n")
    return [b"\n".join(lines[i:i + 4]) for i in range(0, len(lines) - 1, 4)]


@BOTH
@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "staged"])
@pytest.mark.finding("issue 12: a BGZF FASTQ chunk whose ranged GET is corrupted in flight fails as a corrupt "
                     "file (exit 1, which no retry strategy retries) [found by the chaos suite]")
def test_flip_in_a_ranged_get_of_a_fastq_chunk(lab, stream, chaos):
    """The chunk's ranged GET carries no checksum of its own, but every BGZF block has its
    CRC32: a block that fails it is read again (a fresh GET from that block), so the tool gets
    the chunk's right records, streamed or staged."""
    how = "--stream reads" if stream else "staged"
    chaos.tried("flip-get", f"run -i reads=plan.json#2 {how} (BGZF pair), a bit flipped in a ranged GET, {lab.kind}")
    r1, r2 = pair(60000, seed=7, max_len=120)
    lab.put("fq/s_R1.fastq.gz", bgzf(r1))
    lab.put("fq/s_R2.fastq.gz", bgzf(r2))
    ok(cli(["-q", "plan", "fastq", lab.uri("fq/s_R1.fastq.gz"), lab.uri("fq/s_R2.fastq.gz"), "--parts", "4",
            "-o", lab.uri("fq/s.plan.json")], lab.env))
    ok(chunk_run(lab, False, "want"))
    want1, want2 = records(lab.get("fq/want/a.fq.gz")), records(lab.get("fq/want/b.fq.gz"))
    assert len(want1) == len(want2) > 1000
    assert b"".join(w + b"\n" for w in want1) in r1  # the chunk is a run of the source's records
    lab.proxy.add(Rule("flip", op="GetObject", ranged=True, key=r"s_R2", nth=[1], at=0.5))
    r = chunk_run(lab, stream, "got")
    injected(lab, "flip")
    ok(r)
    assert records(lab.get("fq/got/a.fq.gz")) == want1
    assert records(lab.get("fq/got/b.fq.gz")) == want2
    lab.assert_clean()
    clean_scratch(lab)


@pytest.mark.parametrize("lab", ["moto"], indirect=True)
@pytest.mark.finding("issue 15: a staged output that fails deletes the object at a streamed output's key (neither the old nor the new "
         "bytes are left) [found by the chaos suite]")
def test_a_staged_output_failing_keeps_the_object_at_a_streamed_outputs_key(lab, chaos):
    chaos.tried("throttle", "run --stream output over an existing object, a second (staged) output denied, moto")
    old = seeded_bytes(1 << 20, 117)
    lab.put("ko/out/y.bin", old)
    src = lab.tmp / "src.bin"
    src.write_bytes(seeded_bytes(MULTI, 118))
    lab.proxy.add(Rule("status", status=403, code="AccessDenied", op=("PutObject", "CreateMultipartUpload"),
                       key=r"/z\.txt$"))
    r = cli(run_cmd(lab, "-o", f"y={lab.uri('ko/out/y.bin')}", "--stream", "y", "-o", f"z={lab.uri('ko/out/z.txt')}",
                    "--shell", "--", f"cat {src} > {{y}}; echo z > {{z}}"), lab.env)
    injected(lab, "status")
    last_line_error(r, 4)
    assert lab.get("ko/out/z.txt") is None
    assert lab.get("ko/out/y.bin") == old, "the job failed and the object at the streamed output's key is gone"
    lab.assert_clean()
    clean_scratch(lab)
