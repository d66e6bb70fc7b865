"""Build the compiled kernels and ship the container recipes; everything else is in pyproject.toml."""
import os
import shutil
import sys
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
CFLAGS = ["-O3", "-std=c11"] if os.name != "nt" else []

# libraries a kernel links with
LIBRARIES = {"genostage.codec._bgzf": ["z"]}

# name -> sources; each kernel is a small private module wrapped by a Python one.
KERNELS = {
    "genostage.codec._checksum": ["ext/_checksum.pyx", "ext/crc_kernels.c", "ext/md5_mb.c"],
    "genostage.codec._bgzf": ["ext/_bgzf.pyx"],
    "genostage.split._bam": ["ext/_bam.pyx"],
    "genostage.split._fastq": ["ext/_fastq.pyx"],
}

# `genostage image` reads the image recipes from the installed package: the wheel carries a
# copy of the repository's top-level containers/ at genostage/deploy/containers/.
CONTAINERS = "containers"
CONTAINERS_IN_PACKAGE = ("genostage", "deploy", "containers")


class BuildExt(build_ext):
    """Stripped kernels on Linux (no symbol tables or debug sections: the wheels are a third the
    size); ``build_ext --debug`` (or ``GENOSTAGE_DEBUG_BUILD=1``) keeps them."""

    def build_extensions(self) -> None:
        if sys.platform.startswith("linux") and not (self.debug or os.environ.get("GENOSTAGE_DEBUG_BUILD")):
            for ext in self.extensions:
                ext.extra_compile_args = [*ext.extra_compile_args, "-g0"]
                ext.extra_link_args = [*ext.extra_link_args, "-Wl,--strip-all"]
        super().build_extensions()


class BuildPy(build_py):
    """build_py, plus the container recipes copied into the package being built."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads containers/ from the source tree itself
        source = HERE / CONTAINERS
        if not (source / "base" / "Dockerfile").is_file():
            raise SystemExit(f"{source}: missing (the sdist and the wheel ship the container recipes)")
        target = Path(self.build_lib, *CONTAINERS_IN_PACKAGE)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns(".*", "*~", "__pycache__"))


extensions = [
    Extension(name, sources, extra_compile_args=CFLAGS, include_dirs=["ext"], libraries=LIBRARIES.get(name, []))
    for name, sources in KERNELS.items()
]

setup(
    ext_modules=cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False}),
    cmdclass={"build_ext": BuildExt, "build_py": BuildPy},
)
