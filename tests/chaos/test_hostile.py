"""Hostile keys, names, symlinks and commands: nothing runs from a name, nothing from outside
scratch is published, and each refusal is one line with the documented exit code."""
from __future__ import annotations

import json
import os
from typing import Any

import pytest

from .harness import Lab, cli, files, last_line_error, leftovers, ok, one_line_error, same_bytes, seeded_bytes

BOTH = pytest.mark.parametrize("lab", ["moto", "rclone"], indirect=True)
MOTO = pytest.mark.parametrize("lab", ["moto"], indirect=True)


def finding(text: str) -> Any:
    """An issue 12 finding this case reproduced before it was fixed."""
    return pytest.mark.finding(f"issue 12: {text}")


def run_args(lab: Lab, *args: str) -> list:
    return ["-q", "run", "--scratch", str(lab.tmp / "scratch"), *args]


# -- keys --------------------------------------------------------------------------------
@BOTH
@pytest.mark.parametrize("key", ["..", "x/.."])
@finding("tracebacks on a single-object key `..` or `x/..`")
def test_dot_dot_single_object_key(lab, key, chaos):
    chaos.tried("hostile-name", f"cp s3://bucket/{key} DIR/, {lab.kind}")
    if lab.kind == "moto":  # rclone refuses to store such keys; genostage must refuse them anyway
        lab.put(key, b"outside")
    out = lab.tmp / "d"
    r = cli(["-q", "cp", lab.uri(key), str(out) + "/"], lab.env)
    one_line_error(r, 8)
    assert not out.exists() or files(out) == []
    assert not (lab.tmp / "outside").exists()


@BOTH
@pytest.mark.parametrize("key", ["../escape.txt", "a/../../escape.txt", "a//b.txt", "./c.txt"])
def test_unsafe_keys_under_a_prefix(lab, key, chaos):
    if lab.kind == "rclone" and (".." in key or "//" in key or key.startswith("./")):
        pytest.skip("rclone refuses to store such keys")
    chaos.tried("hostile-name", f"run -i x=s3://bucket/pre/ holding {key!r}, {lab.kind}")
    lab.put("pre/ok.txt", b"fine")
    lab.put("pre/" + key, b"evil")
    r = cli(run_args(lab, "-i", f"x={lab.uri('pre/')}", "--", "ls", "{x}"), lab.env)
    one_line_error(r, 8)
    assert not (lab.tmp / "escape.txt").exists()
    assert leftovers(lab.tmp / "scratch") == []


@BOTH
@pytest.mark.parametrize("name", ["$(id>&2).txt", "`id>&2`.txt", "a;id>&2;.txt", "x' ; id>&2 ; '.txt"])
@pytest.mark.parametrize("quoting", ["bare", "double-quoted"])
def test_keys_that_look_like_commands(lab, name, quoting, chaos, request):
    """``--shell`` with a staged key that holds shell syntax: the key is data, never a command."""
    chaos.tried("hostile-name", f"run --shell cat {quoting} {{x}}, key {name!r}, {lab.kind}")
    if quoting == "double-quoted":
        request.applymarker(finding("`--shell` with `cat \"{in}\"`: an object key holding `$(...)` or backticks "
                                  "runs that command (single-quote quoting inside double quotes turns literal: "
                                  "the quotes become part of the path, and a key holding ' runs its commands)"))
    lab.put("sh/" + name, b"just data\n")
    placeholder = '"{x}"' if quoting == "double-quoted" else "{x}"
    r = cli(["run", "--scratch", str(lab.tmp / "scratch"), "-i", f"x={lab.uri('sh/' + name)}",
             "-o", f"y={lab.uri('sh-out/y.txt')}", "--stdout", "y", "--shell", "--", f"cat {placeholder}"], lab.env)
    assert "uid=" not in r.stderr, f"a command in the key ran:\n{r.stderr}"
    ok(r)
    assert lab.get("sh-out/y.txt") == b"just data\n"


@BOTH
@pytest.mark.parametrize("name", ["it's \"quoted\".txt", "tab\tname.txt", "new\nline.txt", "sp ace/ü-ñ.txt"])
def test_odd_names_round_trip(lab, name, chaos):
    if lab.kind == "moto" and "\n" in name:
        pytest.skip("moto's server cannot store a key with a newline")
    chaos.tried("hostile-name", f"cp up and down, name {name!r}, {lab.kind}")
    data = seeded_bytes(5000, 71)
    src = lab.tmp / "src"
    (src / os.path.dirname(name)).mkdir(parents=True, exist_ok=True)
    (src / name).write_bytes(data)
    ok(cli(["-q", "cp", str(src) + "/", lab.uri("odd/")], lab.env))
    lab.assert_object("odd/" + name, data)
    ok(cli(["-q", "cp", lab.uri("odd/"), str(lab.tmp / "back") + "/"], lab.env))
    same_bytes(lab.tmp / "back" / name, data)


@MOTO
def test_a_long_but_legal_name(lab, chaos):
    chaos.tried("hostile-name", "cp of a key whose last component has 250 characters (temporary names fit)")
    name = "L" * 250
    lab.put("long/" + name, b"long")
    ok(cli(["-q", "cp", lab.uri("long/" + name), str(lab.tmp / "d") + "/"], lab.env))
    same_bytes(lab.tmp / "d" / name, b"long")


@MOTO
@finding("tracebacks on a 300-character file name")
def test_a_name_too_long_for_the_file_system(lab, chaos):
    chaos.tried("hostile-name", "cp of a key whose last component has 300 characters")
    lab.put("long/" + "L" * 300, b"long")
    r = cli(["-q", "cp", lab.uri("long/" + "L" * 300), str(lab.tmp / "d") + "/"], lab.env)
    one_line_error(r, 2, "too long")
    assert leftovers(lab.tmp / "d") == [] if (lab.tmp / "d").exists() else True


@MOTO
@finding("an output named with invalid UTF-8 kills the wire thread with UnicodeEncodeError and the job hangs")
def test_an_output_named_with_invalid_utf8(lab, chaos):
    chaos.tried("hostile-name", "run, a directory output holding a file named b'bad\\xff'")
    r = cli(run_args(lab, "-o", f"d={lab.uri('u8/out/')}", "--shell", "--",
                     "echo fine > {d}/good.txt; echo bad > {d}/$(printf 'bad\\377')"), lab.env, timeout=10)
    last_line_error(r, 2)
    assert [k for k in lab.keys("u8/out/") if not k.endswith("manifest.json")] == []


@MOTO
@finding("an output named with invalid UTF-8 kills the wire thread with UnicodeEncodeError and the job hangs "
       "(cp of a directory holding one too)")
def test_an_upload_of_a_name_with_invalid_utf8(lab, chaos):
    chaos.tried("hostile-name", "cp of a directory holding a file named b'bad\\xff'")
    src = lab.tmp / "src"
    src.mkdir()
    (src / "good.txt").write_bytes(b"fine")
    with open(os.path.join(os.fsencode(src), b"bad\xff"), "wb") as fh:
        fh.write(b"bad")
    r = cli(["-q", "cp", str(src) + "/", lab.uri("u8/")], lab.env, timeout=10)
    one_line_error(r, 2, "UTF-8")
    assert lab.keys("u8/") == []


@MOTO
@finding("a non-ASCII --sse-kms-key-id kills the wire thread with UnicodeEncodeError and the job hangs")
def test_a_non_ascii_kms_key_id(lab, chaos):
    chaos.tried("hostile-name", "cp upload with --sse aws:kms --sse-kms-key-id 'clé-ключ'")
    src = lab.tmp / "f.bin"
    src.write_bytes(b"x" * 1000)
    r = cli(["-q", "cp", "--sse", "aws:kms", "--sse-kms-key-id", "clé-ключ", str(src), lab.uri("kms/f.bin")], lab.env,
            timeout=10)
    one_line_error(r, 2)
    assert lab.keys("kms/") == []


@MOTO
@finding("DNS failure reads 'Unknown error -2'")
def test_an_endpoint_that_does_not_resolve(lab, chaos):
    chaos.tried("hostile-name", "cp with --endpoint-url http://no-such-host.invalid")
    r = cli(["-q", "cp", "--endpoint-url", "http://no-such-host.invalid:9000", lab.uri("x.bin"), str(lab.tmp / "x")],
            lab.env, timeout=30)
    line = one_line_error(r, 5)
    assert "Unknown error" not in line and "no-such-host.invalid" in line


# -- symlinks ------------------------------------------------------------------------------
@MOTO
def test_a_symlink_out_of_scratch_inside_a_directory_output(lab, chaos):
    chaos.tried("symlink", "run, a directory output holding a symlink to a file outside scratch")
    secret = lab.tmp / "secret.txt"
    secret.write_text("secret")
    r = cli(run_args(lab, "-o", f"d={lab.uri('sl/out/')}", "--shell", "--",
                     f"echo ok > {{d}}/a.txt; ln -s {secret} {{d}}/leak.txt"), lab.env)
    one_line_error(r, 8)
    assert [k for k in lab.keys("sl/out/") if not k.endswith("manifest.json")] == []


@MOTO
@finding("the output-symlink rule checks entries but not the output path: `rmdir {out}; ln -s /elsewhere {out}` "
       "publishes files from outside scratch")
def test_a_directory_output_replaced_by_a_symlink(lab, chaos):
    chaos.tried("symlink", "run, `rmdir {d}; ln -s OUTSIDE {d}`")
    outside = lab.tmp / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    r = cli(run_args(lab, "-o", f"d={lab.uri('sd/out/')}", "--shell", "--", f"rmdir {{d}}; ln -s {outside} {{d}}"),
            lab.env)
    one_line_error(r, 8)
    assert [k for k in lab.keys("sd/out/") if not k.endswith("manifest.json")] == []


@MOTO
@finding("the output-symlink rule checks entries but not the parents of a file output: swapping out/ for a "
       "symlink publishes a file from outside scratch")
def test_the_parent_of_a_file_output_replaced_by_a_symlink(lab, chaos):
    chaos.tried("symlink", "run, the output's parent directory swapped for a symlink out of scratch")
    outside = lab.tmp / "outside"
    outside.mkdir()
    (outside / "y.txt").write_text("secret")
    r = cli(run_args(lab, "-o", f"y={lab.uri('sp/out/y.txt')}", "--shell", "--",
                     "d=$(dirname {y}); mv $d $d.orig; ln -s " + str(outside) + " $d"), lab.env)
    one_line_error(r, 8)
    assert lab.get("sp/out/y.txt") is None


@MOTO
@finding("tracebacks on a symlink loop")
def test_a_symlink_loop_in_a_directory_output(lab, chaos):
    chaos.tried("symlink", "run, a directory output holding a symlink loop")
    r = cli(run_args(lab, "-o", f"d={lab.uri('lp/out/')}", "--shell", "--",
                     "echo ok > {d}/a.txt; ln -s loop2 {d}/loop1; ln -s loop1 {d}/loop2"), lab.env)
    one_line_error(r, 8)
    assert [k for k in lab.keys("lp/out/") if not k.endswith("manifest.json")] == []


@MOTO
@finding("tracebacks on a symlink loop (cp of a path that is a loop: exit 5, a code AWS Batch retries, where "
       "fsutil.os_error says 8)")
def test_a_symlink_loop_given_to_cp(lab, chaos):
    chaos.tried("symlink", "cp of a path that is a symlink loop")
    loop = lab.tmp / "loop"
    os.symlink(lab.tmp / "loop", loop)
    r = cli(["-q", "cp", str(loop), lab.uri("loop.bin")], lab.env)
    one_line_error(r, 8)
    assert lab.keys() == []


# -- commands ------------------------------------------------------------------------------
@MOTO
@finding("`--shell -- 'false | cat > {out}'` exits 0 and publishes an empty output (no pipefail)")
def test_a_failing_pipeline(lab, chaos):
    chaos.tried("hostile-input", "run --shell 'false | cat > {y}'")
    r = cli(run_args(lab, "-o", f"y={lab.uri('pf/out/y.txt')}", "--shell", "--", "false | cat > {y}"), lab.env)
    last_line_error(r, 1)
    assert lab.get("pf/out/y.txt") is None
    m = json.loads(lab.get("pf/out/y.txt.manifest.json") or b"{}")
    assert m.get("status") == "tool_failed"
