#!/usr/bin/env python3
"""Builds kiln_hello-1.0.0-py3-none-any.whl from ./kiln_hello, offline and deterministically.

Usage: build_wheel.py OUTDIR   (prints the wheel's path)

A wheel is a zip archive (the binary distribution format spec, packaging.python.org): the
package's files plus NAME-VERSION.dist-info/{METADATA,WHEEL,RECORD}, RECORD listing every other
file with its urlsafe-base64 sha256 (no padding) and size. Entries are written sorted, with a
fixed timestamp and mode and without compression, so the same sources always give the same
bytes -- and so the same mirror digest. Standard library only; no network.
"""

import base64
import hashlib
import pathlib
import sys
import zipfile

NAME = "kiln-hello"
DIST = "kiln_hello"  # the name as the wheel spec escapes it in file names
VERSION = "1.0.0"
TAG = "py3-none-any"
HERE = pathlib.Path(__file__).resolve().parent
EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest a zip entry can say

METADATA = f"""Metadata-Version: 2.1
Name: {NAME}
Version: {VERSION}
Summary: The package kiln's pip-offline example installs from the mirror
"""

WHEEL = f"""Wheel-Version: 1.0
Generator: kiln build_wheel.py
Root-Is-Purelib: true
Tag: {TAG}
"""


def record_line(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{path},sha256={digest},{len(data)}\n"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: build_wheel.py OUTDIR")
    out_dir = pathlib.Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    dist_info = f"{DIST}-{VERSION}.dist-info"
    files = {
        str(p.relative_to(HERE)): p.read_bytes()
        for p in sorted((HERE / DIST).rglob("*.py"))
    }
    files[f"{dist_info}/METADATA"] = METADATA.encode()
    files[f"{dist_info}/WHEEL"] = WHEEL.encode()
    record = "".join(record_line(path, data) for path, data in sorted(files.items()))
    files[f"{dist_info}/RECORD"] = (record + f"{dist_info}/RECORD,,\n").encode()

    wheel = out_dir / f"{DIST}-{VERSION}-{TAG}.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as archive:
        # RECORD last, as the spec recommends; everything else sorted.
        for path in sorted(files, key=lambda p: (p.endswith("/RECORD"), p)):
            info = zipfile.ZipInfo(path, date_time=EPOCH)
            info.external_attr = 0o100644 << 16
            info.create_system = 3  # Unix, so the mode above is read
            archive.writestr(info, files[path])
    print(wheel)


if __name__ == "__main__":
    main()
