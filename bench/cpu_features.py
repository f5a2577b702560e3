"""Print this CPU's features in ``NUMBA_CPU_FEATURES`` form with some turned off, so that a
benchmark compiles its kernels as for a smaller CPU of the same kind, e.g. a CPU without
AVX-512 on an AVX-512 machine::

    export NUMBA_CPU_NAME=znver3
    export NUMBA_CPU_FEATURES=$(python -m bench.cpu_features --off avx512)

The kernels then choose their code by these features (``rans_simd.compiled_features``), as
they would on such a CPU; the core's own speed is still this one's.
"""

from __future__ import annotations

import argparse

# Features that come with AVX-512 in LLVM's list without its prefix.
_WITH_AVX512 = ("evex512", "avx10.1-256", "avx10.1-512")


def features(off: list[str]) -> str:
    """The host's features, ``+name`` or ``-name``, each starting with a prefix in ``off``
    (and, for ``avx512``, those that come with it) turned off."""
    import llvmlite.binding as llvm

    def kept(name: str) -> bool:
        if "avx512" in off and name in _WITH_AVX512:
            return False
        return not any(name.startswith(prefix) for prefix in off)

    host = sorted(llvm.get_host_cpu_features().items())
    return ",".join(f"{'+' if on and kept(name) else '-'}{name}" for name, on in host)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--off", nargs="*", default=["avx512"], help="feature name prefixes")
    print(features(parser.parse_args().off))


if __name__ == "__main__":
    main()
