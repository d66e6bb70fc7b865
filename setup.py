"""Build the compiled kernels; everything else is in pyproject.toml."""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

CFLAGS = ["-O3", "-std=c11"] if os.name != "nt" else []

# libraries a kernel links with
LIBRARIES = {"genostage.codec._bgzf": ["z"]}

# name -> sources; each kernel is a small private module wrapped by a Python one.
KERNELS = {
    "genostage.codec._checksum": ["ext/_checksum.pyx", "ext/crc_kernels.c", "ext/md5_mb.c"],
    "genostage.codec._bgzf": ["ext/_bgzf.pyx"],
    "genostage.split._fastq": ["ext/_fastq.pyx"],
}

extensions = [
    Extension(name, sources, extra_compile_args=CFLAGS, include_dirs=["ext"], libraries=LIBRARIES.get(name, []))
    for name, sources in KERNELS.items()
]

setup(
    ext_modules=cythonize(extensions, language_level=3, compiler_directives={"boundscheck": False, "wraparound": False}),
)
