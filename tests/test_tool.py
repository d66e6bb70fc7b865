"""Running the tool (genostage.job.tool): placeholders, shell quoting, pipefail, leftover
processes, the stderr tail, output when nothing configured logging."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import pytest

from genostage.errors import ToolFailed, UsageError
from genostage.job.tool import Tool, display, expand, shell_script

HOSTILE = [
    "a b.txt",
    "$(touch PWNED).txt",
    "`touch PWNED`.txt",
    "it's.txt",
    'say "hi".txt',
    "back\\slash.txt",
    "semi;colon&&amp.txt",
    "new\nline.txt",
]


def test_argv_form_fills_paths_and_keeps_literal_braces():
    assert expand(["cat", "{in}", "{{in}}", "x{out}y"], {"in": "/s/a b", "out": "/o"}) == \
        ["cat", "/s/a b", "{in}", "x/oy"]
    with pytest.raises(UsageError, match=r"unknown placeholder \{nope\}.*known: in"):
        expand(["{nope}"], {"in": "x"})


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("template", [
    'cat {in} > {out}',             # bare
    'cat "{in}" > "{out}"',         # inside double quotes
    "cat '{in}' > '{out}'",         # inside single quotes
    'cat "$(echo {in})" > {out}',   # inside $( ) inside double quotes
    'f={in}; cat "$f" > {out}',     # an assignment
])
def test_no_key_runs_code_in_shell_form(tmp_path, name, template):
    """The path is only ever a file name, wherever the placeholder stands in the script."""
    src = tmp_path / name
    src.write_text("payload\n")
    out = tmp_path / "out.txt"
    tool = Tool([template], shell=True, cwd=str(tmp_path), values={"in": str(src), "out": str(out)})
    result = tool.run()
    assert result.returncode == 0, result.stderr_tail
    assert out.read_text() == "payload\n"
    assert not (tmp_path / "PWNED").exists()


def test_shell_script_quotes_for_the_context_and_leaves_shell_variables():
    script, env = shell_script("""echo {a} "{a}" '{a}' ${HOME} {{a}}""", {"a": "/x"})
    assert script == """echo "${GS_a}" "${GS_a}" ''"${GS_a}"'' ${HOME} {a}"""
    assert env == {"GS_a": "/x"}
    script, env = shell_script("cat {r.1} {r.2}", {"r.1": "/1", "r.2": "/2"})
    assert script == 'cat "${GS_r__1}" "${GS_r__2}"' and env == {"GS_r__1": "/1", "GS_r__2": "/2"}


def test_display_shows_the_paths_filled_in():
    assert display(["cat {in} | wc -l"], {"in": "/a b"}, shell=True) == "cat '/a b' | wc -l"
    assert display(["cat", "{in}"], {"in": "/a b"}, shell=False) == "cat '/a b'"


def test_a_failing_stage_of_a_pipe_fails_the_tool(tmp_path):
    out = tmp_path / "out"
    result = Tool(["false | cat > {out}"], shell=True, values={"out": str(out)}).run()
    assert result.returncode == 1


def test_leftover_processes_are_ended_and_do_not_hold_the_job(tmp_path):
    """`sleep 300 &` keeps the tool's stderr open: the job must not wait for it."""
    marker = tmp_path / "pid"
    start = time.monotonic()
    result = Tool([f"sleep 300 & echo $! > {marker}; echo hi >&2"], shell=True).run()
    took = time.monotonic() - start
    assert result.returncode == 0 and result.leftovers_ended == 1
    assert took < 15, took
    pid = int(marker.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        if _is_zombie(pid):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the leftover sleep {pid} is still running")
    assert "hi" in result.stderr_tail


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_tool_failed_carries_the_stderr_tail():
    result = Tool(["bash", "-c", "for i in $(seq 30); do echo line$i >&2; done; exit 3"]).run()
    assert result.returncode == 3
    assert result.stderr_tail[-1] == "line30" and len(result.stderr_tail) == 20
    err = ToolFailed("bash ...", result.returncode, result.stderr_tail)
    assert str(err) == "tool exited with status 3: bash ... (its last words: line30)"
    assert err.stderr_tail[0] == "line11"


def test_tool_output_is_shown_when_nothing_configured_logging(tmp_path):
    """A Python caller that configured no logging still sees what the tool prints."""
    code = ("from genostage.job.tool import Tool;"
            "Tool(['bash', '-c', 'echo to-out; echo to-err >&2']).run()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "to-out\n" and r.stderr == "to-err\n"


def test_tool_output_goes_to_the_log_when_logging_is_configured(caplog):
    logger = logging.getLogger("genostage")
    handler = logging.NullHandler()
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="genostage.tool"):
            Tool(["bash", "-c", "echo shown"]).run()
    finally:
        logger.removeHandler(handler)
    assert "[stdout] shown" in caplog.text


def test_missing_command_is_a_usage_error():
    with pytest.raises(UsageError, match="command not found: no-such-tool-xyz"):
        Tool(["no-such-tool-xyz"]).run()
    with pytest.raises(UsageError, match="no command given"):
        Tool([])
