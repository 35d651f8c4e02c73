"""The CA file libcurl verifies with: the system store, plus AAMDEST_CA_BUNDLE when set."""

from __future__ import annotations

import atexit
import functools
import hashlib
import os
import shutil
import ssl
import tempfile
import threading
from pathlib import Path

import certifi
from django.conf import settings


def ca_file() -> str:
    """The CA file libcurl verifies with: the system store, plus AAMDEST_CA_BUNDLE when set."""
    system = _system_ca_file()
    extra = settings.AAMDEST_CA_BUNDLE
    if not extra:
        return system
    stat = os.stat(extra)
    combined = _combined_ca_file(system, extra, stat.st_mtime_ns, stat.st_size, os.getpid())
    if not os.path.isfile(combined):  # removed behind our back (a /tmp cleaner): write it again
        _combined_ca_file.cache_clear()
        combined = _combined_ca_file(system, extra, stat.st_mtime_ns, stat.st_size, os.getpid())
    return combined


@functools.cache
def _system_ca_file() -> str:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    return certifi.where()


@functools.lru_cache(maxsize=8)
def _combined_ca_file(system: str, extra: str, mtime_ns: int, size: int, pid: int) -> str:
    """Write the system CAs and `extra` into one file; a new name whenever `extra` changes.

    The file lives in a directory private to this process (a shared /tmp
    name could be planted by another user; a forked sibling's exit removes its own).
    """
    content = Path(system).read_bytes() + b"\n" + Path(extra).read_bytes()
    name = hashlib.sha256(f"{extra}|{mtime_ns}|{size}".encode()).hexdigest()[:16]
    path = _private_directory(pid) / f"ca-{name}.pem"
    # Written aside then renamed, so a concurrent transfer never reads half a file.
    partial = path.with_suffix(f".{threading.get_ident()}.tmp")
    partial.write_bytes(content)
    os.replace(partial, path)
    return str(path)


@functools.cache
def _private_directory(pid: int) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=f"aamdest-ca-{pid}-"))
    atexit.register(_remove_directory, directory, pid)
    return directory


def _remove_directory(directory: Path, pid: int) -> None:
    if os.getpid() == pid:  # a forked child inherits the atexit list, not the directory
        shutil.rmtree(directory, ignore_errors=True)
