"""The table of docs/chaos.md, written from what the suite really ran.

    GENOSTAGE_CHAOS_REPORT=docs/chaos.md .venv/bin/python -m pytest tests/chaos -q

writes docs/chaos.md and, beside it, docs/chaos.json (every case and its outcome);
``python -m tests.chaos.report docs/chaos.json docs/chaos.md`` renders the table again from
that file (after a change to the wording here, without running the suite).

Each case a test tries is tallied under its fault class with the test's outcome: the right
outcome (the test passed), fixed (a passing case marked ``finding``: it reproduced an issue
12 finding before the fix), or a wrong outcome (a failure).
"""
from __future__ import annotations

import collections
import datetime
import json
import os
import re
import sys
from typing import Any, Dict, List, Tuple

# class -> (what is done, the one acceptable outcome)
CLASSES: Dict[str, Tuple[str, str]] = {
    "flip-get": ("a bit flipped in a GET body", "the right bytes at the destination (the part is fetched again), or, where the tool has read the part already (a streamed input), one line, exit 6, nothing published"),
    "flip-put": ("a bit flipped in a PUT or UploadPart body", "the right bytes at the destination (the store "
                 "refuses the body and it is sent again), or one line, exit 6, the destination as it was"),
    "reset": ("connection reset mid-body", "the right bytes (retried)"),
    "truncate": ("body cut short under a correct Content-Length", "the right bytes (retried)"),
    "stall": ("server stalls before answering; body at 1 byte/s", "the right bytes, or one line, exit 5, "
              "within the time limit; never a hang"),
    "throttle": ("5xx and SlowDown: every request for 2-3 s, every 4th request, one 500 on each upload call, "
                 "a 400 on the first create", "the right bytes, uploaded with their checksums"),
    "error200": ("200 with an error body (CompleteMultipartUpload)", "the right bytes, no open multipart upload"),
    "lost-answer": ("the server acted, the answer was dropped", "the right bytes, no open multipart upload"),
    "signal": ("SIGTERM/SIGINT at each phase of run (stage-in, tool, stage-out, manifest), cp, split; "
               "SIGKILL then a rerun with the same AWS_BATCH_JOB_ID",
               "exit 128+N with nothing of the attempt left (no outputs, temporaries, scratch, open "
               "uploads), or exit 0 with everything when the signal came after the work was done; a "
               "rerun resumes and verifies"),
    "full-disk": ("an 8 MiB tmpfs fills up", "one line, exit 7, nothing half-written"),
    "hostile-name": ("hostile keys and names: `..`, `x/..`, `$(...)`, backticks, quotes, newlines, "
                     "long and non-UTF-8 names", "the right bytes under the right name, or one line with "
                     "the documented code; no command ever runs from a name"),
    "symlink": ("symlink loops, symlinks out of scratch as an output or a parent of it",
                "one line, exit 8, nothing from outside scratch published"),
    "hostile-input": ("corrupt and hostile inputs: truncated BGZF, bad plans, bad sizes, corrupt BAM, "
                      "a failing pipeline", "one line with the documented code (1 bad data, 2 usage), "
                      "nothing half-written"),
}

OUTCOMES = ("right outcome", "fixed", "wrong outcome", "skipped")


class Tally:
    def __init__(self) -> None:
        self.results: List[Dict[str, Any]] = []

    def add(self, recorder: Any, report: Any, reason: str) -> None:
        if report.passed:
            outcome = "fixed" if reason else "right outcome"  # a finding's case passing: it stays fixed
        elif report.skipped:
            outcome = "skipped"
        else:
            outcome = "wrong outcome"
        for case in recorder.cases:
            self.results.append({**case, "outcome": outcome, "nodeid": recorder.nodeid, "reason": reason})

    def counts(self) -> Dict[str, "collections.Counter[str]"]:
        out: Dict[str, "collections.Counter[str]"] = collections.defaultdict(collections.Counter)
        for r in self.results:
            out[r["class"]][r["outcome"]] += 1
        return out

    def findings(self) -> Dict[str, List[str]]:
        out: Dict[str, List[str]] = collections.defaultdict(list)
        for r in self.results:
            if r["outcome"] == "fixed":
                reason = re.sub(r"^issue 12: ", "", r["reason"])
                if reason not in out[r["class"]]:
                    out[r["class"]].append(reason)
        return out

    def markdown(self) -> str:
        counts = self.counts()
        findings = self.findings()
        lines = [
            "# The chaos suite",
            "",
            "Faults injected against `genostage` run as a child process, against moto and `rclone serve s3`",
            "behind a fault proxy on loopback (`tests/chaos/proxy.py`), with signals at each phase, an 8 MiB",
            "tmpfs for a full disk, and hostile names, keys, symlinks and inputs. Every case states its one",
            "acceptable outcome and checks it: the right bytes at the destination (compared with the source), or",
            "a one-line error with the documented exit code and no traceback; never anything half-written (no",
            "temporary file, partial object or open multipart upload), orphaned (scratch) or read from outside",
            "scratch.",
            "",
            "Run it (part of `make test`):",
            "",
            "    .venv/bin/python -m pytest tests/chaos -q",
            "    GENOSTAGE_CHAOS_REPORT=docs/chaos.md .venv/bin/python -m pytest tests/chaos -q   # rewrites this file",
            "",
            "A case marked `finding` reproduced one of issue 12's findings (or one the suite found) on the code",
            "before it was fixed (each was run as `xfail(strict=True)` until its fix landed, failing for its",
            "stated reason); *fixed* counts those cases, which now give the right outcome too.",
            "",
            "| fault class | what is done | the one acceptable outcome | cases | right outcome | "
            "of them: findings fixed | wrong outcome | skipped |",
            "|---|---|---|---:|---:|---:|---:|---:|",
        ]
        total: "collections.Counter[str]" = collections.Counter()
        for cls, (what, expected) in CLASSES.items():
            c = counts.get(cls, collections.Counter())
            total.update(c)
            n = sum(c.values())
            right = c["right outcome"] + c["fixed"]
            lines.append(f"| {cls} | {what} | {expected} | {n} | {right} | {c['fixed']} | "
                         f"{c['wrong outcome']} | {c['skipped']} |")
        n = sum(total.values())
        right = total["right outcome"] + total["fixed"]
        lines.append(f"| **all** | | | **{n}** | **{right}** | **{total['fixed']}** | "
                     f"**{total['wrong outcome']}** | **{total['skipped']}** |")
        lines += ["", "## The findings, by class (each reproduced before its fix; its cases pass now)", ""]
        for cls in CLASSES:
            for reason in findings.get(cls, []):
                lines.append(f"- {cls}: {reason}")
        nodes = sorted({(r["nodeid"], r["reason"]) for r in self.results if r["outcome"] == "fixed"})
        lines += ["", "## The cases that reproduced them", ""]
        lines += [f"- `{nodeid}`: {reason}" for nodeid, reason in nodes]
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        lines += ["", f"Generated {stamp} by `tests/chaos/report.py` from {n} cases "
                  f"on {os.cpu_count()} CPUs.", ""]
        return "\n".join(lines)

    def write(self, target: str) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        cases = os.path.splitext(target)[0] + ".json"
        for path, text in ((cases, json.dumps(self.results, indent=1) + "\n"), (target, self.markdown())):
            tmp = path + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)


def main(argv: List[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.chaos.report CASES.json OUT.md", file=sys.stderr)
        return 2
    tally = Tally()
    with open(argv[0]) as fh:
        tally.results = json.load(fh)
    tally.write(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
