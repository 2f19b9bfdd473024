"""Fuzz the two parsers a hostile bundle reaches first: bundle.json and the tar reader.

`make fuzz` runs this with atheris for a bounded time (FUZZ_SECONDS, default 60).
The only acceptable outcomes for any input are a parsed value or a BundleError
(or TrustError); anything else is a crash the fuzzer reports.
"""

from __future__ import annotations

import io
import sys

import atheris

with atheris.instrument_imports():
    from bundle.errors import AirlockError
    from bundle.manifest import Manifest
    from bundle.tarstream import TarReader


def fuzz_one(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        try:
            Manifest.parse(data[1:])
        except AirlockError:
            pass
    else:
        reader = TarReader(io.BytesIO(data[1:]))
        try:
            for _header in reader.members():
                for _chunk in reader.content(4096):
                    pass
        except AirlockError:
            pass


def main() -> None:
    atheris.Setup(sys.argv, fuzz_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
