"""Paths that reach the host from a stack file: where iacloud keeps its files, which settings
paths it accepts, and which image sources a stack may read.

A stack file may come from a pull request and be applied by root. So a path in provider
settings must be absolute, normalized (no `.`/`..` steps, no repeated or trailing `/`) and free
of control characters; a file iacloud writes by name (the virt_type cache, the netlink records)
must lie under a directory iacloud owns; and an image `source` is read only from the stack's
directory tree - the git working tree holding the stack file, or the stack file's directory
when it is in none - or from a directory listed in `image_roots` / IACLOUD_IMAGE_ROOTS.
Symbolic links are resolved before that check, so a link in the tree cannot point outside it.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

IMAGE_ROOTS_ENV = "IACLOUD_IMAGE_ROOTS"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# directories a pool must not be made in: the system's own (their subdirectories included)
_SYSTEM_TREES = ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/boot",
                 "/dev", "/proc", "/sys")  # fmt: skip
# ... and shared directories that are fine to hold a pool below them, but not to be one
_SYSTEM_DIRS = ("/", "/var", "/run", "/tmp", "/home", "/root", "/srv", "/opt", "/mnt", "/media")


def data_root() -> Path:
    """Host-level working files of providers, kept across runs and checkouts (so a CI job in a
    fresh clone still finds the dnsmasq configs of the stack it applied yesterday)."""
    if env := os.environ.get("IACLOUD_DATA_DIR"):
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/iacloud")
    return Path.home() / ".local" / "share" / "iacloud"


def owned_roots() -> list[str]:
    """The directories iacloud owns: it creates them and writes nothing outside them by name."""
    roots = ["/run/iacloud", "/var/lib/iacloud", "/var/cache/iacloud"]
    data = posixpath.normpath(str(data_root().absolute()))
    if data not in roots:
        roots.append(data)
    return roots


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def check_absolute(value: str) -> str:
    """An absolute, normalized path without control characters; ValueError otherwise."""
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (NUL, newline, ...)")
    if not value.startswith("/"):
        raise ValueError("must be an absolute path")
    # normpath keeps a leading '//', which POSIX leaves implementation-defined: refuse it too
    if posixpath.normpath(value) != value or value.startswith("//"):
        raise ValueError(
            f"must be a normalized path (no '.', '..', '//' or trailing '/'): "
            f"{posixpath.normpath(value)!r}?"
        )
    return value


def check_owned(value: str) -> str:
    """A path iacloud will write to: absolute, normalized, under a directory it owns."""
    check_absolute(value)
    roots = owned_roots()
    if not any(_inside(value, r) and value != r for r in roots):
        raise ValueError(f"must be under a directory iacloud owns: {', '.join(roots)}")
    return value


def check_pool_directory(value: str) -> str:
    """A directory a storage pool may be made in: absolute, normalized, not a system one."""
    check_absolute(value)
    if value in _SYSTEM_DIRS or any(_inside(value, t) for t in _SYSTEM_TREES):
        raise ValueError("must not be a system directory: use one of its own, such as "
                         "/var/lib/iacloud/pool")  # fmt: skip
    return value


def stack_tree(stack_dir: Path) -> Path:
    """The stack's directory tree: the git working tree that holds it, else its directory."""
    start = stack_dir.resolve()
    for d in (start, *start.parents):
        if (d / ".git").exists():
            return d
    return start


def image_roots(
    configured: Iterable[str] = (), environ: dict[str, str] | None = None
) -> list[Path]:
    """The directories besides the stack's tree that image sources may be read from."""
    env = (environ if environ is not None else os.environ).get(IMAGE_ROOTS_ENV, "")
    listed = [*configured, *(p for p in env.split(os.pathsep) if p)]
    return [Path(p).resolve() for p in listed if p.startswith("/")]


def image_source_problem(path: Path, stack_dir: Path, roots: Sequence[Path]) -> str | None:
    """Why a local image source may not be read, or None: it must resolve inside the stack's
    tree or an image root."""
    real = path.resolve()
    allowed = [stack_tree(stack_dir), *roots]
    if any(real == r or r in real.parents for r in allowed):
        return None
    shown = str(path) if real == path.absolute() else f"{path} (which resolves to {real})"
    return (
        f"image source {shown} is outside the stack's directory tree ({allowed[0]}); "
        f"list its directory in image_roots of [provider.libvirt] or in {IMAGE_ROOTS_ENV} "
        "to allow it"
    )
