"""Staging (genostage.job.staging): where inputs land, what an output may publish."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import genostage
from genostage.errors import UnsafePath, UsageError
from genostage.job.staging import Staged, collect_output, plan_input, plan_output

from .helpers import put


def _out(tmp_path: Path, is_dir: bool) -> "tuple[Path, Staged]":
    root = tmp_path / "scratch"
    (root / "out").mkdir(parents=True)
    staged = plan_output("o", "s3://bkt/res/" + ("d/" if is_dir else "x.txt"), root / "out", set())
    return root, staged


def test_directory_output_replaced_by_a_link_to_elsewhere_is_refused(tmp_path, stores):
    """`rmdir {out}; ln -s /elsewhere {out}`: every entry is 'inside' the link, but the
    directory itself is outside scratch."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret.txt").write_text("secret")
    root, out = _out(tmp_path, True)
    out.path.rmdir()
    out.path.symlink_to(elsewhere)
    with pytest.raises(UnsafePath, match="outside the scratch directory"):
        collect_output(stores, out, str(root))


def test_file_output_whose_parent_was_swapped_for_a_link_is_refused(tmp_path, stores):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.txt").write_text("secret")
    root, out = _out(tmp_path, False)
    parent = out.path.parent
    os.rename(parent, tmp_path / "gone")
    parent.symlink_to(elsewhere)
    with pytest.raises(UnsafePath, match="outside the scratch directory"):
        collect_output(stores, out, str(root))


def test_links_inside_scratch_are_published(tmp_path, stores):
    root, out = _out(tmp_path, True)
    (out.path / "real.txt").write_text("x")
    (out.path / "link.txt").symlink_to("real.txt")
    collect_output(stores, out, str(root))
    assert sorted(str(dest) for _, dest in out.items) == ["s3://bkt/res/d/link.txt", "s3://bkt/res/d/real.txt"]


def test_a_link_loop_is_one_clear_error(tmp_path, stores):
    root, out = _out(tmp_path, True)
    (out.path / "a").symlink_to("b")
    (out.path / "b").symlink_to("a")
    with pytest.raises(UnsafePath, match="symbolic links"):
        collect_output(stores, out, str(root))


@pytest.mark.parametrize("key", ["..", "x/.."])
def test_single_object_keys_that_leave_the_directory_are_refused(s3, bucket, stores, tmp_path, key):
    with pytest.raises(UnsafePath, match="outside its directory"):
        plan_input(stores, "x", f"s3://{bucket}/{key}", tmp_path, set())


def test_a_chunk_plan_staged_whole_is_refused_with_a_hint(s3, s3_client, bucket, stores, tmp_path):
    put(s3_client, bucket, "p.plan.json", b'{"format": "genostage-plan/1", "kind": "bam"}')
    with pytest.raises(UsageError, match=r"is a chunk plan: write .*p.plan.json#N"):
        plan_input(stores, "reads", f"s3://{bucket}/p.plan.json", tmp_path, set())
    put(s3_client, bucket, "other.json", b'{"hello": 1}')
    staged = plan_input(stores, "meta", f"s3://{bucket}/other.json", tmp_path, set())
    assert staged.path.name == "other.json"


def test_plan_ref_without_an_index_needs_one(s3, bucket, stores, tmp_path):
    with pytest.raises(UsageError, match="AWS_BATCH_JOB_ARRAY_INDEX, which is not set"):
        plan_input(stores, "reads", f"s3://{bucket}/p.plan.json#", tmp_path, set())


def test_stage_in_of_a_prefix_does_not_nest_its_folder(s3, s3_client, bucket, stores, tmp_path):
    """As `genostage cp` does: the prefix's objects land in the directory itself."""
    put(s3_client, bucket, "refs/hg38/a.fa", b"A")
    put(s3_client, bucket, "refs/hg38/sub/b.fa", b"B")
    got = genostage.stage_in(f"s3://{bucket}/refs/hg38/", tmp_path / "refs", stores=stores)
    assert got == tmp_path / "refs"
    assert (tmp_path / "refs" / "a.fa").read_bytes() == b"A" and (tmp_path / "refs" / "sub" / "b.fa").read_bytes() == b"B"
    one = genostage.stage_in(f"s3://{bucket}/refs/hg38/a.fa", tmp_path / "one", stores=stores)
    assert one == tmp_path / "one" / "a.fa" and one.read_bytes() == b"A"
