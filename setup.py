"""Builds the validator's optional C fast path (`tracking_plan/_fastcheck.pyx`, Cython).

Everything else is in pyproject.toml. When the extension cannot be built (no C compiler), the
install goes on without it: `tracking_plan.fastpath` then leaves every call to the pure-Python
validator, which gives the same results, only slower.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that warns instead of failing when the C extension cannot be compiled."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:
            print(f"warning: trackwatch's C fast path not built ({exc}); pure Python is used")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"warning: {ext.name} not built ({exc}); pure Python is used")


try:
    from Cython.Build import cythonize
except ImportError:  # no Cython: no fast path
    extensions = []
else:
    extensions = cythonize(
        [Extension("tracking_plan._fastcheck", ["tracking_plan/_fastcheck.pyx"], optional=True)],
        compiler_directives={"language_level": "3"},
        quiet=True,
    )

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
