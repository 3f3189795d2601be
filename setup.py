"""Build the optional C accelerator; everything else is configured in pyproject.toml.

``postgres_async._speedups`` is compiled when a C compiler (and Python's headers) are
there. When they are not, or the compilation fails for any reason, the build warns and
goes on: the package then runs on its pure-Python reference (see ``_accel.py``).
"""

from __future__ import annotations

import sys

# setuptools ships type hints only in recent versions: the ignores cover older ones.
from setuptools import Extension, setup  # type: ignore[import-untyped,unused-ignore]
from setuptools.command.build_ext import (  # type: ignore[import-untyped,unused-ignore]
    build_ext,
)

_EXTENSION = Extension(
    "postgres_async._speedups",
    sources=["src/postgres_async/_speedups.c"],
    optional=True,
)


class _OptionalBuildExt(build_ext):  # type: ignore[misc,unused-ignore]
    """``optional=True`` covers compiler errors; this also covers anything else."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # any failure: fall back to pure Python
            _warn(exc)

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            _warn(exc)

    def copy_extensions_to_source(self) -> None:
        # Editable installs copy the built module next to the sources; one that failed
        # to build is simply not there.
        try:
            super().copy_extensions_to_source()
        except Exception as exc:
            _warn(exc)


def _warn(exc: BaseException) -> None:
    print(
        "WARNING: postgres_async._speedups was not built "
        f"({type(exc).__name__}: {exc}); the pure-Python implementation will be used.",
        file=sys.stderr,
    )


setup(
    ext_modules=[_EXTENSION],
    cmdclass={"build_ext": _OptionalBuildExt},
    # The C source is in the sdist (to build from); wheels need only the module.
    exclude_package_data={"postgres_async": ["*.c"]},
)
