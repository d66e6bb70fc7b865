"""Container images: build the images under ``containers/`` and push them to ECR.

One folder per image under ``containers/`` (``base`` plus one per tool), each with a
Dockerfile; the folder is the source checkout's when genostage runs from one, else the copy
shipped in the wheel (``genostage/deploy/containers``). Images build for x86_64 or arm64
(``platform``; tags ``VERSION`` and ``VERSION-arm64``); another architecture than this
machine's runs under qemu-user-static (binfmt_misc). The engine is docker where a docker engine answers ``docker info``, otherwise
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
        return self.tag_for("x86_64")

    def tag_for(self, platform: str) -> str:
        """``genostage/NAME:VERSION`` (x86_64) or ``genostage/NAME:VERSION-arm64``."""
        return f"{self.repository}:{platform_tag(self.version, platform)}"

    def build_args(self) -> Dict[str, str]:
        """``ARG NAME[=default]`` declarations of the Dockerfile (defaults may be empty)."""
        return dockerfile_args(self.dockerfile.read_text())


def dockerfile_args(text: str) -> Dict[str, str]:
    args: Dict[str, str] = {}
    for m in re.finditer(r"^ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?\s*$", text, re.M):
        args.setdefault(m.group(1), m.group(2) or "")
    return args


def _is_checkout(d: Path) -> bool:
    return (d / "containers" / "base" / "Dockerfile").is_file() and (d / "pyproject.toml").is_file()


def source_checkout() -> Optional[Path]:
    """The source checkout genostage runs from (editable install or ``python -m`` in the tree), if any."""
    top = Path(__file__).resolve().parent.parent.parent  # genostage/deploy/image.py -> the tree
    return top if _is_checkout(top) else None


def packaged_containers() -> Optional[Path]:
    """``containers/`` shipped inside the wheel (``genostage/deploy/containers``), if present."""
    from importlib import resources

    try:
        root = resources.files("genostage.deploy") / "containers"
    except (ModuleNotFoundError, TypeError):
        return None
    path = Path(str(root))  # an installed wheel is a directory tree, not a zip
    return path if (path / "base" / "Dockerfile").is_file() else None


def find_repo(start: Optional[Path] = None) -> Path:
    """The genostage source tree: ``start`` (or a folder above it), else the checkout genostage runs from."""
    if start is not None:
        for d in [Path(start).resolve(), *Path(start).resolve().parents]:
            if _is_checkout(d):
                return d
        raise UsageError(f"--repo {start}: not a genostage source tree (no containers/base/Dockerfile "
                         "and pyproject.toml in it or above it)")
    found = source_checkout()
    if found is None:
        raise UsageError("this genostage is installed from a wheel, not run from a source checkout: "
                         "pass --repo DIR (a genostage checkout)")
    return found


def containers_dir(repo: Optional[Path] = None) -> Path:
    """The images' folder: ``repo``'s ``containers/``, else the source checkout's, else the wheel's copy."""
    if repo is not None:
        return find_repo(repo) / "containers"
    checkout = source_checkout()
    if checkout is not None:
        return checkout / "containers"
    packaged = packaged_containers()
    if packaged is not None:
        return packaged
    raise UsageError("no container definitions: genostage runs from neither a source checkout nor a wheel "
                     "that ships genostage/deploy/containers (pass --repo DIR, a genostage checkout)")


def list_images(containers: Path) -> List[str]:
    """The image folders under ``containers`` (the folder itself, e.g. from :func:`containers_dir`)."""
    return sorted(p.parent.name for p in containers.glob("*/Dockerfile"))


def image_spec(containers: Path, name: str) -> ImageSpec:
    directory = containers / name
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", name) or not (directory / "Dockerfile").is_file():
        raise UsageError(f"unknown image {name!r}: choose from {', '.join(list_images(containers))}")
    if name == "base":
        version = __version__
    else:
        version = dockerfile_args((directory / "Dockerfile").read_text()).get("TOOL_VERSION", "")
        if not version:
            raise UsageError(f"{directory / 'Dockerfile'}: no 'ARG TOOL_VERSION=...' to take the version from")
    return ImageSpec(name, directory, version)


# ---------------------------------------------------------------- platforms

PLATFORMS = ("x86_64", "arm64")  # AWS Batch's names for the two architectures
_ALIASES = {"x86_64": "x86_64", "amd64": "x86_64", "linux/amd64": "x86_64",
            "arm64": "arm64", "aarch64": "arm64", "linux/arm64": "arm64", "linux/arm64/v8": "arm64"}
DEBIAN_ARCH = {"x86_64": "amd64", "arm64": "arm64"}
WHEEL_ARCH = {"x86_64": "x86_64", "arm64": "aarch64"}
QEMU_BINFMT = {"x86_64": "qemu-x86_64", "arm64": "qemu-aarch64"}


def platform_name(text: Optional[str] = None) -> str:
    """``x86_64`` or ``arm64`` for any usual spelling (amd64, aarch64, linux/arm64); None: this host's."""
    if text is None:
        text = os.uname().machine
    try:
        return _ALIASES[text.lower()]
    except KeyError:
        raise UsageError(f"unknown platform {text!r}: x86_64 or arm64") from None


def oci_platform(platform: str) -> str:
    return f"linux/{DEBIAN_ARCH[platform_name(platform)]}"


def platform_tag(version: str, platform: str) -> str:
    """The image tag for ``platform``: the version for x86_64, ``VERSION-arm64`` for arm64."""
    platform = platform_name(platform)
    return version if platform == "x86_64" else f"{version}-{platform}"


def check_emulation(platform: str, binfmt: Path = Path("/proc/sys/fs/binfmt_misc")) -> None:
    """Building for another architecture runs its binaries: qemu-user-static must be registered."""
    platform = platform_name(platform)
    if platform == platform_name():
        return
    entry = binfmt / QEMU_BINFMT[platform]
    try:
        enabled = entry.read_text().splitlines()[0].strip() == "enabled"
    except (OSError, IndexError):
        enabled = False
    if not enabled:
        raise UsageError(f"building {platform} images on {platform_name()} runs {platform} binaries: install "
                         f"qemu-user-static and register it with binfmt_misc ({entry} is missing or disabled)")


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

    def build(self, context: Path, dockerfile: Path, tag: str, build_args: Dict[str, str],
              platform: Optional[str] = None) -> None:
        args = ["build", *self.build_flags, "-f", str(dockerfile), "-t", tag]
        if platform is not None:
            args += ["--platform", oci_platform(platform)]
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


def bootstrap_rootfs(mirror: str, suite: str = DEBIAN_SUITE, cache: Path = CACHE_DIR,
                     runner: Runner = subprocess.run, platform: Optional[str] = None) -> Tuple[Path, str]:
    """A slim Debian root file system for ``platform`` (default: this host's) as a tarball, made once
    and cached: (path, key). Another architecture's needs qemu-user-static (see :func:`check_emulation`)."""
    arch = DEBIAN_ARCH[platform_name(platform)]
    key = rootfs_key(suite, mirror, arch)
    tarball = cache / f"debian-{suite}-{arch}-{key}.tar"
    if tarball.is_file():
        log.info("Debian %s root file system: cached %s", suite, tarball)
        return tarball, key
    if not shutil.which("debootstrap"):
        raise UsageError("debootstrap is not installed (make container-deps)")
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".work-debian-{suite}-{arch}-", dir=cache))
    try:
        rootfs = work / "rootfs"
        started = time.monotonic()
        log.info("debootstrap --variant=minbase --arch %s %s from %s (a minute or more)", arch, suite, mirror)
        for attempt in (1, 2):  # debootstrap itself does not retry a failed download
            try:
                _call(["debootstrap", "--variant=minbase", f"--arch={arch}", suite, str(rootfs), mirror],
                      runner=runner)
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
        for old in cache.glob(f"debian-{suite}-{arch}-*.tar"):
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
                        cache: Path = CACHE_DIR, platform: Optional[str] = None) -> str:
    """Make ``ref`` available to podman from a debootstrap root file system; returns the ref to use
    (``localhost/debian:bookworm-slim``, ``...-arm64`` for arm64).

    docker pulls the image itself (``--platform`` picks the architecture); so does podman where
    ``debootstrap`` is missing.
    """
    platform = platform_name(platform)
    if engine.kind != "podman":
        return ref
    if not shutil.which("debootstrap"):
        log.warning("debootstrap is not installed: podman pulls %s", ref)
        return ref
    local = ref if "/" in ref.split(":")[0] else f"localhost/{ref}"
    if platform != "x86_64":
        local = f"{local}-{platform}"
    arch = DEBIAN_ARCH[platform]
    mirror = mirror or debian_mirror()
    if engine.label(local, ROOTFS_LABEL) == rootfs_key(DEBIAN_SUITE, mirror, arch):
        return local
    check_emulation(platform)
    tarball, key = bootstrap_rootfs(mirror, cache=cache, runner=engine.runner, platform=platform)
    engine.call(["import", "--arch", arch, "--change", f"LABEL {ROOTFS_LABEL}={key}", "--change", 'CMD ["bash"]',
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
    platform: str = "x86_64"

    def __str__(self) -> str:
        return (f"{self.tag} ({self.platform}): {format_size(self.size)} ({self.size} bytes), "
                f"built in {self.seconds:.0f} s")


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


def download_wheels(requirements: Sequence[str], dest: Path, platform: str, python: str = sys.executable,
                    runner: Runner = subprocess.run) -> None:
    """``pip download`` binary wheels of ``requirements`` (and their dependencies) for the image's
    CPython 3.11 on ``platform``, whatever this machine is."""
    arch = WHEEL_ARCH[platform_name(platform)]
    argv = [python, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(dest),
            "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--abi", "abi3",
            "--abi", "none"]
    for tag in ("manylinux_2_36", "manylinux_2_28", "manylinux2014", "linux"):  # linux_*: a local build
        argv += ["--platform", f"{tag}_{arch}"]
    dest.mkdir(parents=True, exist_ok=True)
    _call([*argv, *requirements], runner=runner)


def copy_source(repo: Path, dest: Path) -> None:
    """What building genostage from source needs (no compiled or generated files)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(repo / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.so", "_*.c", "containers")
    for folder in ("genostage", "ext"):
        shutil.copytree(repo / folder, dest / folder, ignore=ignore)


def base_context(spec: ImageSpec, context: Path, platform: str, repo: Optional[Path], wheel: Optional[Path],
                 python: str, runner: Runner) -> None:
    """The base image's build context: its folder, ``wheels/`` and (to compile in the image) ``src/``.

    With ``wheel`` (a genostage wheel for ``platform``): it and its dependencies. Else from the
    source checkout: ``pip wheel`` of it when ``platform`` is this machine's; for another
    architecture the source tree goes in ``src/`` with the build requirements' wheels for that
    platform, and the image's install stage compiles the kernels (under emulation).
    """
    shutil.copytree(spec.directory, context)
    wheels, src = context / "wheels", context / "src"
    wheels.mkdir()
    src.mkdir()
    (src / "EMPTY").write_text("no source: genostage installs from wheels/\n")
    if wheel is not None:
        if not wheel.is_file() or not wheel.name.startswith(f"genostage-{__version__}-"):
            raise UsageError(f"--wheel {wheel}: expected a genostage-{__version__}-*.whl file")
        if not wheel.name.endswith(("-none-any.whl", f"_{WHEEL_ARCH[platform]}.whl")):
            raise UsageError(f"--wheel {wheel.name}: not built for {platform} ({WHEEL_ARCH[platform]})")
        shutil.copy2(wheel, wheels / wheel.name)
        download_wheels([str(wheel)], wheels, platform, python, runner)
        return
    if repo is None:
        raise UsageError("building the base image needs genostage itself: pass --wheel FILE (a genostage "
                         f"{__version__} wheel for {platform}) or --repo DIR (a source checkout)")
    built = build_wheels(repo, wheels, python=python, runner=runner)
    if platform == platform_name() or built.name.endswith("-none-any.whl"):
        log.info("wheel: %s", built.name)
        return
    built.unlink()  # this machine's build; the dependencies beside it are pure Python
    download_wheels(["setuptools>=64", "wheel", "Cython>=3.0"], wheels, platform, python, runner)
    copy_source(repo, src)
    log.info("no %s wheel given: genostage is compiled from source inside the image (slow under emulation)",
             platform)


def build(name: str, tag: Optional[str] = None, engine: Optional[Engine] = None,
          repo: Optional[Path] = None, base: Optional[str] = None, python: str = sys.executable,
          cache: Path = CACHE_DIR, platform: Optional[str] = None, wheel: Optional[Path] = None) -> BuiltImage:
    """Build ``containers/<name>`` for ``platform`` (default: this machine's); a tool image builds
    the base first unless ``base`` is given."""
    platform = platform_name(platform)
    spec = image_spec(containers_dir(repo), name)
    checkout = find_repo(repo) if repo is not None else source_checkout()
    engine = engine or detect_engine()
    tag = tag or spec.tag_for(platform)
    check_emulation(platform)
    declared = spec.build_args()
    values: Dict[str, str] = {}
    if "BUILD_IMAGE" in declared or name == "base":
        debian = ensure_debian_image(engine, cache=cache, platform=platform)
        values["BUILD_IMAGE" if name != "base" else "BASE_IMAGE"] = debian
    if name != "base":
        values["BASE_IMAGE"] = base or build("base", engine=engine, repo=repo, python=python, cache=cache,
                                             platform=platform, wheel=wheel).tag
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"genostage-image-{name}-") as tmp:
        context = spec.directory
        if name == "base":
            context = Path(tmp) / "context"
            base_context(spec, context, platform, checkout, wheel, python, engine.runner)
            values["GENOSTAGE_VERSION"] = __version__
        log.info("building %s for %s with %s", tag, platform, engine.kind)
        engine.build(context, context / "Dockerfile", tag,
                     {k: v for k, v in values.items() if k in declared}, platform=platform)
    built = BuiltImage(name, tag, engine.size(tag), time.monotonic() - started, platform)
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
         repo: Optional[Path] = None, ecr: Any = None, tag: Optional[str] = None,
         platform: Optional[str] = None) -> List[str]:
    """Tag the built image with its version and ``latest`` in ECR (``VERSION-arm64`` and
    ``latest-arm64`` for arm64) and push both; the pushed refs."""
    platform = platform_name(platform)
    spec = image_spec(containers_dir(repo), name)
    local = tag or spec.tag_for(platform)
    reg = parse_registry(registry, region)
    engine = engine or detect_engine()
    if not engine.exists(local):
        flag = "" if platform == "x86_64" else f" --platform {platform}"
        raise NotFound(f"image {local} does not exist: run 'genostage image build {name}{flag}' first")
    if ecr is None:
        import boto3

        ecr = boto3.client("ecr", region_name=reg.region)
    uri = ensure_repository(ecr, reg.prefix + spec.repository)
    username, password, _ = registry_credentials(ecr, reg.account)
    engine.login(reg.host, username, password)
    pushed = []
    for version in (spec.version, "latest"):
        ref = f"{uri}:{platform_tag(version, platform)}"
        engine.tag(local, ref)
        engine.push(ref)
        log.info("pushed %s", ref)
        pushed.append(ref)
    return pushed
