"""The one way the package writes and reads a secret file (keys, codes, tokens).

The secrets directory lies inside the data directory, which the unprivileged roles
own and can write. Root (`sudo appliance setup-code`, first start of a unit) also
writes there, so a compromised role could plant a symlink (`secrets -> /etc`, or at a
predictable temporary name) and make root chown or overwrite a file of its choice.
So every step here works on file descriptors:

- the directory is opened with O_NOFOLLOW|O_DIRECTORY and checked with fstat: a real
  directory, owned by root or by the data directory's owner, writable by no one else;
  then fchmod 0700 and (as root) fchown to that owner;
- a secret is written to a fresh random name created with O_CREAT|O_EXCL|O_NOFOLLOW
  relative to that directory's descriptor, fsynced, fchmod/fchown'ed, then renamed
  over the target (rename replaces a symlink, it never follows one) or, with
  `replace=False`, linked to it only if nothing is there yet;
- reads open with O_NOFOLLOW too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from appliance.errors import ApplianceError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeSecretPath(ApplianceError):
    """A secret's directory or file is not what it must be (a symlink, someone else's)."""

    code = "unsafe-secret-path"
    exit_code = 77


def owner_for(data_dir: Path) -> tuple[int, int] | None:
    """Who a secret made by root belongs to: the data directory's owner, when that is
    not root (the roles run as it); None when there is nothing to change."""
    if os.geteuid() != 0:
        return None
    try:
        st = os.lstat(data_dir)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode) or st.st_uid == 0:
        return None
    return st.st_uid, st.st_gid


@contextlib.contextmanager
def open_dir(
    directory: Path, *, owner: tuple[int, int] | None = None, create: bool = True
) -> Iterator[int]:
    """A checked descriptor of `directory` (made 0700 when missing), closed on exit."""
    if create:
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass
        except OSError as e:
            raise ApplianceError(f"cannot create {directory}: {e.strerror}") from None
    try:
        fd = os.open(directory, _DIR_FLAGS)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeSecretPath(f"{directory} is not a directory (a symlink?): refusing")
        raise ApplianceError(f"cannot open {directory}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        allowed = {0, os.geteuid()} | ({owner[0]} if owner else set())
        if st.st_uid not in allowed:
            raise UnsafeSecretPath(f"{directory} belongs to uid {st.st_uid}: refusing")
        if st.st_uid == os.geteuid() or os.geteuid() == 0:
            if stat.S_IMODE(st.st_mode) != 0o700:
                os.fchmod(fd, 0o700)
        elif st.st_mode & 0o022:
            raise UnsafeSecretPath(f"{directory} is writable by others: refusing")
        if owner is not None and (st.st_uid, st.st_gid) != owner:
            os.fchown(fd, *owner)
        yield fd
    finally:
        os.close(fd)


def write(
    directory: Path,
    name: str,
    data: bytes,
    *,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
    replace: bool = True,
) -> bool:
    """Write `data` to `directory/name` atomically with `mode` (and `owner`).

    With `replace=False` an existing file is kept (another process made it first) and
    False is returned; otherwise True.
    """
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"{name!r} is not a file name")
    with open_dir(directory, owner=owner) as dfd:
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
            mode,
            dir_fd=dfd,
        )
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fchmod(fd, mode)
                if owner is not None:
                    os.fchown(fd, *owner)
                os.fsync(fd)
            finally:
                os.close(fd)
            if replace:
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
                made = True
            else:
                try:
                    os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                    made = True
                except FileExistsError:
                    made = False
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
        os.fsync(dfd)
        return made


def read(path: Path) -> bytes:
    """The bytes of the secret at `path`; never through a symlink (UnsafeSecretPath).
    FileNotFoundError when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeSecretPath(f"{path} is a symlink: refusing to read it") from None
        raise
    with os.fdopen(fd, "rb") as f:
        return f.read()
