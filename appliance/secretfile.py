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
- reads open the directory and the file with O_NOFOLLOW, and O_NONBLOCK so a FIFO
  planted at the name cannot hang root; only a regular file of bounded size with one
  link is read (a hard link planted at the name, where the system lets the roles' user
  make one, would have root read a file of its own and print it: the setup code);
- removal unlinks relative to the checked directory's descriptor too.

Directories above the secrets directory are not checked: the data directory's parent
(/var/lib) is root's, so the service user cannot swap the data directory itself.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from appliance.errors import ApplianceError, UnsafeSecretPath

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# reading and unlinking need only search permission on the directory, as a path would
_LOOKUP_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
READ_LIMIT = 1 << 20  # a key, a code, a token: far below; a planted huge file is refused


def _dir_fd(directory: Path, flags: int, refusing: str) -> int:
    """A descriptor of `directory` opened without following a symlink: UnsafeSecretPath
    when it is one (or not a directory); other OSErrors as they are, for the caller."""
    try:
        return os.open(directory, flags)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeSecretPath(
                f"{directory} is not a directory (a symlink?): {refusing}"
            ) from None
        raise


def owner_for(data_dir: Path) -> tuple[int, int] | None:
    """Who a secret made by root belongs to: the data directory's owner, when that is
    not root (the roles run as it); None when there is nothing to change.

    A symlink as the data directory itself is followed: only whoever owns its parent
    (root: /var/lib) can make one, and an admin may (/var/lib/appliance -> /data/...)."""
    if os.geteuid() != 0:
        return None
    try:
        st = os.stat(data_dir)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid == 0:
        return None
    return st.st_uid, st.st_gid


@contextlib.contextmanager
def open_dir(
    directory: Path,
    *,
    owner: tuple[int, int] | None = None,
    create: bool = True,
    dir_mode: int | None = 0o700,
) -> Iterator[int]:
    """A checked descriptor of `directory`, closed on exit.

    Made (with its missing parents) when `create`; narrowed to `dir_mode` (None: its mode
    is left alone, e.g. the run directory others read, but it must not be writable by
    group or others) and, with `owner`, given to that owner.
    """
    directory = Path(directory)
    if create:
        try:
            directory.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(directory, 0o700 if dir_mode is None else dir_mode)
        except FileExistsError:
            pass
        except OSError as e:
            raise ApplianceError(f"cannot create {directory}: {e.strerror}") from None
    try:
        fd = _dir_fd(directory, _DIR_FLAGS, "refusing")
    except OSError as e:
        raise ApplianceError(f"cannot open {directory}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        allowed = {0, os.geteuid()} | ({owner[0]} if owner else set())
        if st.st_uid not in allowed:
            raise UnsafeSecretPath(f"{directory} belongs to uid {st.st_uid}: refusing")
        mine = st.st_uid == os.geteuid() or os.geteuid() == 0
        if dir_mode is not None and mine:
            if stat.S_IMODE(st.st_mode) != dir_mode:
                os.fchmod(fd, dir_mode)
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
    dir_mode: int | None = 0o700,
) -> bool:
    """Write `data` to `directory/name` atomically with `mode` (and `owner`).

    With `replace=False` an existing file is kept (another process made it first) and
    False is returned; otherwise True. UnsafeSecretPath when the directory is not safe,
    ApplianceError naming the file when the system refuses (no space, a directory there).
    """
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"{name!r} is not a file name")
    with open_dir(directory, owner=owner, dir_mode=dir_mode) as dfd:
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            made = _write_at(dfd, tmp, name, data, mode, owner, replace)
        except OSError as e:
            raise ApplianceError(
                f"cannot write {Path(directory) / name}: {e.strerror or e}"
            ) from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
        return made


def _write_at(
    dfd: int,
    tmp: str,
    name: str,
    data: bytes,
    mode: int,
    owner: tuple[int, int] | None,
    replace: bool,
) -> bool:
    fd = os.open(
        tmp,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        mode,
        dir_fd=dfd,
    )
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
    os.fsync(dfd)
    return made


def read(path: Path, *, limit: int = READ_LIMIT) -> bytes:
    """The bytes of the secret at `path`; never through a symlink, neither the file nor its
    directory (UnsafeSecretPath), only a regular file of at most `limit` bytes.
    FileNotFoundError when it (or its directory) does not exist."""
    path = Path(path)
    dfd = _dir_fd(path.parent, _LOOKUP_FLAGS, f"refusing to read {path.name}")
    try:
        fd = os.open(path.name, _READ_FLAGS, dir_fd=dfd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeSecretPath(f"{path} is a symlink: refusing to read it") from None
        raise
    finally:
        os.close(dfd)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeSecretPath(f"{path} is not a regular file: refusing to read it")
        if st.st_nlink != 1:  # a hard link to a file elsewhere (/etc/shadow) is not ours
            raise UnsafeSecretPath(
                f"{path} has {st.st_nlink} links (a hard link?): refusing to read it"
            )
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnsafeSecretPath(f"{path} is larger than {limit} bytes: refusing to read it")
    return data


def remove(directory: Path, name: str) -> bool:
    """Delete `directory/name` (never through a symlinked directory); False if absent."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"{name!r} is not a file name")
    try:
        dfd = _dir_fd(directory, _LOOKUP_FLAGS, f"refusing to delete {name}")
    except FileNotFoundError:
        return False
    except OSError as e:
        raise ApplianceError(f"cannot open {directory}: {e.strerror}") from None
    try:
        os.unlink(name, dir_fd=dfd)
        return True
    except FileNotFoundError:
        return False
    except OSError as e:
        raise ApplianceError(f"cannot delete {Path(directory) / name}: {e.strerror}") from None
    finally:
        os.close(dfd)
