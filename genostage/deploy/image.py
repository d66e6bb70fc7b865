"""Container images: build the images under ``containers/`` and push them to ECR.

One folder per image under ``containers/`` (``base`` plus one per tool), each with a
Dockerfile. The engine is docker where a docker engine answers ``docker info``, otherwise
podman (``--storage-driver vfs``, ``--isolation chroot``, ``--network host``: what works
without a daemon or privileges beyond root). Without a registry to pull from, the Debian
base (``debian:bookworm-slim``) is made with ``debootstrap --variant=minbase`` and imported;
the root file system is cached as a tarball under ``/var/tmp/genostage-containers`` keyed by
a hash of the inputs (suite, mirror, architecture, slimming recipe).
"""
from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from .. import __version__
from ..errors import AccessDenied, GenostageError, NotFound, UsageError
from ..units import format_size

log = logging.getLogger("genostage.image")

DEBIAN_SUITE = "bookworm"
DEBIAN_IMAGE = "debian:bookworm-slim"
REPOSITORY_PREFIX = "genostage/"
CACHE_DIR = Path(os.environ.get("GENOSTAGE_CONTAINER_CACHE", "/var/tmp/genostage-containers"))
ROOTFS_LABEL = "org.genostage.rootfs"
# Bump when the slimming recipe below changes: it is part of the rootfs cache key.
SLIM_RECIPE = "1"
SLIM_DPKG_CFG = """\
# genostage: keep images small, like Debian's -slim images (documentation and locales left out)
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
"""
SLIM_APT_CFG = """\
# genostage: retry flaky downloads; do not keep downloaded packages in images
Acquire::Retries "3";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""

Runner = Callable[..., "subprocess.CompletedProcess[str]"]


class EngineFailed(GenostageError):
    """A container engine (or debootstrap, or pip) command failed."""

    def __init__(self, argv: Sequence[str], returncode: int, output: str = "") -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output
        tail = "\n".join(output.strip().splitlines()[-15:])
        message = f"{' '.join(argv[:4])} ... failed with status {returncode}"
        super().__init__(message + (f":\n{tail}" if tail else ""))


# ---------------------------------------------------------------- the images under containers/

@dataclass(frozen=True)
class ImageSpec:
    """One folder under ``containers/``."""

    name: str
    directory: Path
    version: str

    @property
    def dockerfile(self) -> Path:
        return self.directory / "Dockerfile"

    @property
    def repository(self) -> str:
        return REPOSITORY_PREFIX + self.name

    @property
    def tag(self) -> str:
        return f"{self.repository}:{self.version}"

    def build_args(self) -> Dict[str, str]:
        """``ARG NAME[=default]`` declarations of the Dockerfile (defaults may be empty)."""
        return dockerfile_args(self.dockerfile.read_text())


def dockerfile_args(text: str) -> Dict[str, str]:
    args: Dict[str, str] = {}
    for m in re.finditer(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$", text, re.M):
        args.setdefault(m.group(1), m.group(2) or "")
    return args


def find_repo(start: Optional[Path] = None) -> Path:
    """The genostage source tree (it holds ``containers/base/Dockerfile``)."""
    candidates = []
    if start is not None:
        candidates.append(Path(start))
    candidates += [Path.cwd(), Path(__file__).resolve().parent.parent]
    for first in candidates:
        for d in [first.resolve(), *first.resolve().parents]:
            if (d / "containers" / "base" / "Dockerfile").is_file() and (d / "pyproject.toml").is_file():
                return d
    raise UsageError(
        "cannot find the genostage source tree (a folder with containers/base/Dockerfile "
        "and pyproject.toml): run from a checkout or pass --repo"
    )


def list_images(repo: Path) -> List[str]:
    root = repo / "containers"
    return sorted(p.parent.name for p in root.glob("*/Dockerfile"))


def image_spec(repo: Path, name: str) -> ImageSpec:
    directory = repo / "containers" / name
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name) or not (directory / "Dockerfile").is_file():
        raise UsageError(f"unknown image {name!r}: choose from {', '.join(list_images(repo))}")
    if name == "base":
        version = __version__
    else:
        version = dockerfile_args((directory / "Dockerfile").read_text()).get("TOOL_VERSION", "")
        if not version:
            raise UsageError(f"{directory / 'Dockerfile'}: no 'ARG TOOL_VERSION=...' to take the version from")
    return ImageSpec(name, directory, version)


# ---------------------------------------------------------------- engines

@dataclass
class Engine:
    """docker or podman, driven through subprocess; ``runner`` is injectable for tests."""

    kind: str
    argv: List[str]
    build_flags: List[str] = field(default_factory=list)
    runner: Runner = subprocess.run

    def call(self, args: Sequence[str], stdin: Optional[str] = None, capture: bool = True,
             check: bool = True) -> "subprocess.CompletedProcess[str]":
        return _call([*self.argv, *args], stdin=stdin, capture=capture, check=check, runner=self.runner)

    def exists(self, ref: str) -> bool:
        return self.call(["image", "inspect", "--format", "{{.Id}}", ref], check=False).returncode == 0

    def label(self, ref: str, name: str) -> str:
        proc = self.call(["image", "inspect", "--format", f'{{{{index .Config.Labels "{name}"}}}}', ref], check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    def size(self, ref: str) -> int:
        return int(self.call(["image", "inspect", "--format", "{{.Size}}", ref]).stdout.strip())

    def build(self, context: Path, dockerfile: Path, tag: str, build_args: Dict[str, str]) -> None:
        args = ["build", *self.build_flags, "-f", str(dockerfile), "-t", tag]
        for key, value in build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        # stream the build log: long builds show progress, failures show their cause
        self.call([*args, str(context)], capture=False)

    def tag(self, source: str, target: str) -> None:
        self.call(["tag", source, target])

    def push(self, ref: str) -> None:
        self.call(["push", ref], capture=False)

    def login(self, registry: str, username: str, password: str) -> None:
        self.call(["login", "--username", username, "--password-stdin", registry], stdin=password)


def _call(argv: Sequence[str], stdin: Optional[str] = None, capture: bool = True, check: bool = True,
          runner: Runner = subprocess.run) -> "subprocess.CompletedProcess[str]":
    log.debug("running %s", " ".join(argv))
    try:
        proc = runner(list(argv), input=stdin, text=True, errors="replace",
                      stdout=subprocess.PIPE if capture else None,
                      stderr=subprocess.STDOUT if capture else None)
    except FileNotFoundError:
        raise UsageError(f"{argv[0]}: command not found (make container-deps installs podman, buildah, debootstrap)") from None
    if check and proc.returncode != 0:
        raise EngineFailed(argv, proc.returncode, proc.stdout or "")
    return proc


def podman_engine(storage_driver: Optional[str] = None, runner: Runner = subprocess.run) -> Engine:
    """podman without a daemon: vfs storage, chroot isolation, the host's network.

    ``--layers=false``: on vfs every cached layer is a full copy of the root file system, which
    costs more time and disk than rebuilding these small images.
    """
    driver = storage_driver or os.environ.get("GENOSTAGE_PODMAN_STORAGE_DRIVER", "vfs")
    return Engine("podman", ["podman", "--storage-driver", driver],
                  ["--isolation", "chroot", "--network", "host", "--layers=false"], runner)


def detect_engine(prefer: Optional[str] = None, runner: Runner = subprocess.run) -> Engine:
    """docker if an engine answers ``docker info``, else podman."""
    if prefer not in (None, "docker", "podman"):
        raise UsageError(f"unknown container engine {prefer!r}: docker or podman")
    if prefer in (None, "docker") and shutil.which("docker"):
        try:
            ok = runner(["docker", "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        timeout=30).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return Engine("docker", ["docker"], [], runner)
        if prefer == "docker":
            raise UsageError("docker: no engine answers 'docker info'")
    if shutil.which("podman"):
        return podman_engine(runner=runner)
    raise UsageError("no container engine: no docker engine answers 'docker info' and podman is not "
                     "installed (make container-deps)")


# ---------------------------------------------------------------- the Debian base via debootstrap

def debian_mirror(sources: Sequence[Path] = ()) -> str:
    """The Debian mirror this machine's apt uses (``GENOSTAGE_DEBIAN_MIRROR`` overrides)."""
    if os.environ.get("GENOSTAGE_DEBIAN_MIRROR"):
        return os.environ["GENOSTAGE_DEBIAN_MIRROR"]
    files = list(sources) or [Path("/etc/apt/sources.list"),
                              *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
                              *sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        for uri, suites in _apt_entries(text, deb822=path.suffix == ".sources"):
            if DEBIAN_SUITE in suites and re.search(r"/debian/?$", uri):
                return uri.rstrip("/")
    raise UsageError("no Debian mirror for bookworm in /etc/apt/sources.list*: set GENOSTAGE_DEBIAN_MIRROR")


def _apt_entries(text: str, deb822: bool) -> Iterator[Tuple[str, List[str]]]:
    if deb822:
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
            if "deb" in fields.get("Types", "").split():
                for uri in fields.get("URIs", "").split():
                    yield uri, fields.get("Suites", "").split()
    else:
        for line in text.splitlines():
            parts = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
            if len(parts) >= 3 and parts[0] == "deb":
                yield parts[1], [parts[2]]


def rootfs_key(suite: str, mirror: str, arch: str) -> str:
    text = "\n".join(["debootstrap", "minbase", suite, mirror, arch, SLIM_RECIPE, SLIM_DPKG_CFG, SLIM_APT_CFG])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _arch() -> str:
    try:
        return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return os.uname().machine


def bootstrap_rootfs(mirror: str, suite: str = DEBIAN_SUITE, cache: Path = CACHE_DIR,
                     runner: Runner = subprocess.run) -> Tuple[Path, str]:
    """A slim Debian root file system as a tarball, made once and cached: (path, key)."""
    key = rootfs_key(suite, mirror, _arch())
    tarball = cache / f"debian-{suite}-{key}.tar"
    if tarball.is_file():
        log.info("Debian %s root file system: cached %s", suite, tarball)
        return tarball, key
    if not shutil.which("debootstrap"):
        raise UsageError("debootstrap is not installed (make container-deps)")
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"debian-{suite}-", dir=cache))
    try:
        rootfs = work / "rootfs"
        started = time.monotonic()
        log.info("debootstrap --variant=minbase %s from %s (about a minute)", suite, mirror)
        for attempt in (1, 2):  # debootstrap itself does not retry a failed download
            try:
                _call(["debootstrap", "--variant=minbase", suite, str(rootfs), mirror], runner=runner)
                break
            except EngineFailed:
                if attempt == 2:
                    raise
                log.warning("debootstrap failed; trying once more")
                shutil.rmtree(rootfs, ignore_errors=True)
        _slim(rootfs)
        partial = work / "rootfs.tar"
        _call(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], runner=runner)
        os.replace(partial, tarball)
        for old in cache.glob(f"debian-{suite}-*.tar"):
            if old != tarball:  # made from other inputs (mirror, recipe): superseded
                old.unlink(missing_ok=True)
        log.info("Debian %s root file system: %s in %.0f s", suite, format_size(tarball.stat().st_size),
                 time.monotonic() - started)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball, key


def _slim(rootfs: Path) -> None:
    """What Debian's -slim images leave out, and configuration so later installs stay slim."""
    (rootfs / "etc/dpkg/dpkg.cfg.d/genostage-slim").write_text(SLIM_DPKG_CFG)
    (rootfs / "etc/apt/apt.conf.d/genostage-slim").write_text(SLIM_APT_CFG)
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                    "usr/share/man/*", "usr/share/info/*", "usr/share/lintian/*", "var/log/*.log",
                    "var/cache/debconf/*-old", "var/lib/dpkg/*-old"):
        for p in rootfs.glob(pattern):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.name != "lock":
                p.unlink()
    for p in (rootfs / "usr/share/doc").glob("*/*"):
        if p.name != "copyright":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for p in (rootfs / "usr/share/locale").glob("*"):
        if p.name != "locale.alias":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()


def ensure_debian_image(engine: Engine, ref: str = DEBIAN_IMAGE, mirror: Optional[str] = None,
                        cache: Path = CACHE_DIR) -> str:
    """Make ``ref`` available to podman from a debootstrap root file system; returns the ref to use.

    docker pulls the image itself; so does podman where ``debootstrap`` is missing.
    """
    if engine.kind != "podman":
        return ref
    if not shutil.which("debootstrap"):
        log.warning("debootstrap is not installed: podman pulls %s", ref)
        return ref
    local = ref if "/" in ref.split(":")[0] else f"localhost/{ref}"
    mirror = mirror or debian_mirror()
    if engine.label(local, ROOTFS_LABEL) == rootfs_key(DEBIAN_SUITE, mirror, _arch()):
        return local
    tarball, key = bootstrap_rootfs(mirror, cache=cache, runner=engine.runner)
    engine.call(["import", "--change", f"LABEL {ROOTFS_LABEL}={key}", "--change", 'CMD ["bash"]',
                 str(tarball), local])
    log.info("imported %s as %s", tarball.name, local)
    return local


# ---------------------------------------------------------------- building

@dataclass(frozen=True)
class BuiltImage:
    name: str
    tag: str
    size: int
    seconds: float

    def __str__(self) -> str:
        return f"{self.tag}: {format_size(self.size)} ({self.size} bytes), built in {self.seconds:.0f} s"


def build_wheels(repo: Path, dest: Path, python: str = sys.executable,
                 runner: Runner = subprocess.run) -> Path:
    """``pip wheel`` of the repository (with its dependencies) into ``dest``; the genostage wheel."""
    dest.mkdir(parents=True, exist_ok=True)
    _call([python, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(dest), str(repo)], runner=runner)
    wheels = sorted(dest.glob(f"genostage-{__version__}-*.whl"))
    if not wheels:
        raise EngineFailed([python, "-m", "pip", "wheel"], 0, f"no genostage-{__version__} wheel in {dest}")
    tags = wheels[0].name[:-4].split("-")[-3:]
    if tags[0] not in ("py3", "cp311"):
        log.warning("%s was built for %s; the bookworm image runs CPython 3.11 (use --python python3.11)",
                    wheels[0].name, tags[0])
    return wheels[0]


def build(name: str, tag: Optional[str] = None, engine: Optional[Engine] = None,
          repo: Optional[Path] = None, base: Optional[str] = None, python: str = sys.executable,
          cache: Path = CACHE_DIR) -> BuiltImage:
    """Build ``containers/<name>`` (a tool image builds the base first unless ``base`` is given)."""
    repo = find_repo(repo)
    spec = image_spec(repo, name)
    engine = engine or detect_engine()
    tag = tag or spec.tag
    declared = spec.build_args()
    values: Dict[str, str] = {}
    if "BUILD_IMAGE" in declared or name == "base":
        debian = ensure_debian_image(engine, cache=cache)
        values["BUILD_IMAGE" if name != "base" else "BASE_IMAGE"] = debian
    if name != "base":
        values["BASE_IMAGE"] = base or build("base", engine=engine, repo=repo, python=python, cache=cache).tag
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"genostage-image-{name}-") as tmp:
        context = spec.directory
        if name == "base":
            context = Path(tmp) / "context"
            shutil.copytree(spec.directory, context)
            wheel = build_wheels(repo, context / "wheels", python=python, runner=engine.runner)
            log.info("wheel: %s", wheel.name)
            values["GENOSTAGE_VERSION"] = __version__
        log.info("building %s with %s", tag, engine.kind)
        engine.build(context, context / "Dockerfile", tag,
                     {k: v for k, v in values.items() if k in declared})
    built = BuiltImage(name, tag, engine.size(tag), time.monotonic() - started)
    log.info("built %s", built)
    return built


# ---------------------------------------------------------------- pushing to ECR

_ECR_HOST = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr(?:-fips)?\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


@dataclass(frozen=True)
class Registry:
    account: str
    region: str
    host: str
    prefix: str  # repository name prefix inside the registry ("" or "team/")


def parse_registry(text: str, region: Optional[str] = None) -> Registry:
    """``123456789012`` (needs a region) or ``123456789012.dkr.ecr.REGION.amazonaws.com[/prefix]``."""
    text = text.strip().rstrip("/")
    if re.fullmatch(r"\d{12}", text):
        region = region or _default_region()
        if not region:
            raise UsageError(f"registry {text}: an account id needs --region (or AWS_REGION)")
        return Registry(text, region, f"{text}.dkr.ecr.{region}.amazonaws.com", "")
    host, _, prefix = text.partition("/")
    m = _ECR_HOST.match(host)
    if not m:
        raise UsageError(f"registry {text!r}: expected an AWS account id or an ECR URI "
                         "ACCOUNT.dkr.ecr.REGION.amazonaws.com[/PREFIX]")
    if region and region != m.group("region"):
        raise UsageError(f"registry {text}: is in {m.group('region')}, not --region {region}")
    return Registry(m.group("account"), m.group("region"), host, f"{prefix}/" if prefix else "")


def _default_region() -> Optional[str]:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def _client_error(exc: Exception, what: str) -> GenostageError:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    if code in ("AccessDeniedException", "AccessDenied", "UnrecognizedClientException"):
        return AccessDenied(f"{what}: access denied ({code})")
    return GenostageError(f"{what}: {exc}")


def ensure_repository(ecr: Any, name: str) -> str:
    """The ECR repository's URI, creating the repository (scan on push) when missing."""
    from botocore.exceptions import ClientError

    try:
        repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        return str(repo["repositoryUri"])
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "RepositoryNotFoundException":
            raise _client_error(exc, f"ECR repository {name}") from exc
    try:
        repo = ecr.create_repository(repositoryName=name, imageTagMutability="MUTABLE",
                                     imageScanningConfiguration={"scanOnPush": True})["repository"]
    except ClientError as exc:
        raise _client_error(exc, f"creating ECR repository {name}") from exc
    log.info("created ECR repository %s", repo["repositoryUri"])
    return str(repo["repositoryUri"])


def registry_credentials(ecr: Any, account: Optional[str] = None) -> Tuple[str, str, str]:
    """(username, password, registry host) from ``ecr.get_authorization_token``."""
    from botocore.exceptions import ClientError

    try:
        kwargs = {"registryIds": [account]} if account else {}
        data = ecr.get_authorization_token(**kwargs)["authorizationData"][0]
    except ClientError as exc:
        raise _client_error(exc, "ECR authorization token") from exc
    try:
        username, password = base64.b64decode(data["authorizationToken"]).decode().split(":", 1)
    except (ValueError, UnicodeDecodeError):
        raise GenostageError("ECR returned a malformed authorization token") from None
    host = re.sub(r"^https?://", "", str(data.get("proxyEndpoint", ""))).rstrip("/")
    return username, password, host


def push(name: str, registry: str, region: Optional[str] = None, engine: Optional[Engine] = None,
         repo: Optional[Path] = None, ecr: Any = None, tag: Optional[str] = None) -> List[str]:
    """Tag the built image with its version and ``latest`` in ECR and push both; the pushed refs."""
    spec = image_spec(find_repo(repo), name)
    local = tag or spec.tag
    reg = parse_registry(registry, region)
    engine = engine or detect_engine()
    if not engine.exists(local):
        raise NotFound(f"image {local} does not exist: run 'genostage image build {name}' first")
    if ecr is None:
        import boto3

        ecr = boto3.client("ecr", region_name=reg.region)
    uri = ensure_repository(ecr, reg.prefix + spec.repository)
    username, password, _ = registry_credentials(ecr, reg.account)
    engine.login(reg.host, username, password)
    pushed = []
    for version in (spec.version, "latest"):
        ref = f"{uri}:{version}"
        engine.tag(local, ref)
        engine.push(ref)
        log.info("pushed %s", ref)
        pushed.append(ref)
    return pushed
