"""Files written whole or not at all: a crash, Ctrl-C or `kill -9` mid-write leaves
the previous file (or none), never half of one.

    write_atomically("fit/summary.csv", lambda f: f.write(text.encode()))

The temporary file sits beside the target (so `os.replace` is atomic) and gets the
permissions a plain `open` would give (umask applied), not mkstemp's 0600.
"""
from __future__ import annotations

import os
import tempfile
from typing import BinaryIO, Callable

TEMP_SUFFIX = ".partial"


def write_atomically(path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(stream)` on a temporary file, then move it over `path`."""
    def to_file(temp: str) -> None:
        with open(temp, "wb") as stream:
            write(stream)
    write_path_atomically(path, to_file)


def write_path_atomically(path, write: Callable[[str], None]) -> None:
    """`write(temp)` writes a temporary file beside `path` (writers that want a file
    name, such as netCDF, call it directly), which then moves over `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=folder, prefix=os.path.basename(path) + ".",
                                    suffix=TEMP_SUFFIX)
    os.close(handle)
    try:
        write(temp)
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


def write_text_atomically(path, text: str) -> None:
    write_atomically(path, lambda stream: stream.write(text.encode("utf-8")))


def remove_partial_files(folder) -> list[str]:
    """Delete temporary files a killed process left in `folder`; their names."""
    if not os.path.isdir(folder):
        return []
    stale = [n for n in os.listdir(folder) if n.endswith(TEMP_SUFFIX)]
    for name in stale:
        os.remove(os.path.join(folder, name))
    return stale


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
