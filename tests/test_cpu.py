"""CPU counting: affinity and cgroup quotas (v1 and v2) honoured, on real and on made-up cgroup trees."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from genostage import cpu


def _tree(tmp_path, proc_lines, files):  # type: ignore[no-untyped-def]
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text("".join(line + "\n" for line in proc_lines))
    return str(root), str(proc)


def test_v2_quota_is_read_along_the_path_and_the_tightest_wins(tmp_path):
    root, proc = _tree(tmp_path, ["0::/batch/job1"], {
        "cpu.max": "max 100000\n", "batch/cpu.max": "300000 100000\n", "batch/job1/cpu.max": "150000 100000\n"})
    assert cpu.cgroup_quota(root, proc) == 1.5
    root, proc = _tree(tmp_path / "b", ["0::/batch/job1"], {
        "batch/cpu.max": "100000 100000\n", "batch/job1/cpu.max": "max 100000\n"})
    assert cpu.cgroup_quota(root, proc) == 1.0  # the parent's limit holds its children too


def test_v2_without_a_limit(tmp_path):
    root, proc = _tree(tmp_path, ["0::/"], {"cpu.max": "max 100000\n"})
    assert cpu.cgroup_quota(root, proc) is None


def test_v1_quota_and_a_container_that_sees_the_host_path(tmp_path):
    files = {"cpu,cpuacct/cpu.cfs_quota_us": "250000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}
    # inside a container without a cgroup namespace: /proc says the host's path, the mount is our own cgroup
    root, proc = _tree(tmp_path, ["4:memory:/docker/abc", "2:cpu,cpuacct:/docker/abc"], files)
    assert cpu.cgroup_quota(root, proc) == 2.5
    root, proc = _tree(tmp_path / "b", ["2:cpu,cpuacct:/"], {"cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                                                               "cpu,cpuacct/cpu.cfs_period_us": "100000\n"})
    assert cpu.cgroup_quota(root, proc) is None


@pytest.mark.parametrize("text", ["", "garbage\n", "0 100000\n", "100000 0\n"])
def test_malformed_or_zero_quota_is_no_limit(tmp_path, text):
    root, proc = _tree(tmp_path, ["0::/"], {"cpu.max": text})
    assert cpu.cgroup_quota(root, proc) is None


def test_no_cgroup_file_system(tmp_path):
    assert cpu.cgroup_quota(str(tmp_path / "none"), str(tmp_path / "no-proc-file")) is None


def test_available_is_the_smaller_of_affinity_and_quota_rounded_up(tmp_path):
    affinity = len(os.sched_getaffinity(0))
    root, proc = _tree(tmp_path, ["0::/"], {"cpu.max": "50000 100000\n"})  # half a CPU
    assert cpu.available(root, proc) == 1
    root, proc = _tree(tmp_path / "b", ["0::/"], {"cpu.max": "max 100000\n"})
    assert cpu.available(root, proc) == affinity
    root, proc = _tree(tmp_path / "c", ["0::/"], {"cpu.max": f"{(affinity + 8) * 100000} 100000\n"})
    assert cpu.available(root, proc) == affinity  # a quota above the CPUs we may run on adds none


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin to one")
def test_available_honours_the_affinity_mask_of_a_pinned_process():
    """A process pinned to one CPU (taskset, a cpuset) counts one, whatever os.cpu_count() says."""
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " \
           "from genostage import cpu; print(cpu.available(), os.cpu_count())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) == 1 and int(out[1]) >= 2


def test_available_on_this_machine_is_sane():
    assert 1 <= cpu.available() <= (os.cpu_count() or 1)
