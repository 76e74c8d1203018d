"""Web accounts on the config DB: users, API tokens, login throttling and sessions.

Everything here is plain functions over peewee tables, usable from any process
that has a `Store` open (the web role, the CLI, the field role's OPC UA server):

- users: name, role (viewer < operator < admin), an argon2id hash, disabled flag,
  last login. Password policy: at least 12 characters, not in the shipped list of
  common passwords (``common-passwords.txt``), not the user name. A new password
  (own or set by an admin) revokes the user's API tokens and ends all their sessions
  (changing one's own, `PUT /api/session/password` hands out a new one); disabling a
  user does both, and enabling them again brings neither back.
- API tokens: shown once; only their SHA-256 is stored, with an 8-character prefix
  people can recognise. A token's role is at most its user's role, checked again at
  every use (demoting a user demotes their tokens; disabling revokes them). A token
  made with a token (`create_token(not_after=..., parent=...)`) expires at the latest
  when its parent does: a short-lived credential cannot mint a long-lived one; it
  records its parent (table `web_token_parent`), is revoked with it (and so are its own
  children), and works only while every ancestor is live (checked at each use). A user
  has at most `MAX_LIVE_TOKENS` live ones (Conflict beyond); a token revoked or expired
  `TOKEN_KEEP_S` ago is deleted (pruned from `create_token`).
- throttling: a lock never follows a guesser to other people. Three counts, each the
  same back-off (the first `FREE_FAILURES[kind]` failures cost nothing, then each one
  locks for `LOCK_BASE_S` doubled per further failure, 60 s, 120 s ... at most
  `LOCK_MAX_S`; a count is forgotten `FORGET_AFTER_S` after its last failure):

  - ``pair``: per (account, source). The one that stops a guesser: 5 free tries,
    then about one guess an hour, and only from that source (33 a day from one
    address lock `admin` for that address, nobody else).
  - ``addr``: per source across accounts (password spraying); wrong API tokens and
    setup codes count here too.
  - ``user``: per account, counting *distinct sources* that failed (a failure from
    a source it has already counted adds nothing), so no single source can raise it:
    only a distributed guess does. It never applies to the management side: sources
    in a subnet of a mgmt interface, and loopback (the console), which the caller
    tells `login(trusted=True)` (the web decides it, `auth.on_mgmt_side`). This is
    the way in that products keep for their operators (Cisco IOS's `login block-for`
    with `login quiet-mode access-class`): an attacker on the IT side can at worst
    make the admin walk to the mgmt port.

  A source is the peer's address; IPv6 counts per /64 (one host has a whole /64);
  without one (`source=None`: a service that cannot tell) the logons share one
  bucket of their own per account, which touches no real source's counts. While a
  key is locked the password is not even checked (no oracle). An attempt is counted
  before its hash, with the check in one transaction (a concurrent burst is counted as
  it arrives); a right password takes its count back and clears the pair's count.
  Keys never hold a typed user name (it may be a password): a keyed hash of it
  (`name_tag`; the key lives in the config DB). Rows whose count is forgotten and lock
  over, and ended sessions, are pruned on the way (at most every `PRUNE_EVERY_S`, from
  `check_throttle`, which every login, wrong token and setup code passes, and from
  `lookup_session`).
- argon2 (64 MiB a hash) runs in one of `HASH_SLOTS` slots per process; a caller that
  gets none within `HASH_WAIT_S` is answered `Busy` (429, Retry-After), its attempt
  still counted, so a burst of logins cannot take the web role's memory and CPU.
- sessions: server side. The cookie carries a random id; the table keeps only
  its SHA-256 (a copied database does not hand out live sessions), the user, the
  CSRF token, created/last-seen times. A login always makes a new id (the old
  one is deleted), logout deletes it; idle and absolute timeouts come from the
  configuration's `web` section.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import peewee as pw
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from appliance.config.base import NAME_RE
from appliance.errors import Busy, Conflict, Invalid, NotFound, Throttled
from appliance.state.db import ConfigModel, Store

log = logging.getLogger(__name__)

ROLES: tuple[str, ...] = ("viewer", "operator", "admin")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024

FREE_FAILURES = {"pair": 5, "addr": 20, "user": 10}  # "user": distinct sources
LOCK_BASE_S = 60.0
LOCK_MAX_S = 3600.0
# A day: forgetting sooner than the longest lock plus a little would hand a patient
# guesser FREE_FAILURES fresh tries every hour or two.
FORGET_AFTER_S = 86400.0
PRUNE_EVERY_S = 60.0
NO_SOURCE = "-"  # the bucket of logons that come without a source address
UNKNOWN_USER = "unknown user"  # how the audit names a user name that does not exist

# Last-seen is written at most this often per session: a write per request would put an
# fsync (the config DB is synchronous=FULL) on every page poll. Idle timeouts are minutes.
TOUCH_EVERY_S = 15.0
# A token's use is audited at most this often per token (changes are audited each time).
TOKEN_AUDIT_EVERY_S = 60.0

TOKEN_PREFIX = "apl_"
# How deep tokens made with tokens may go (each use checks every ancestor).
MAX_TOKEN_GENERATIONS = 8
# Live (neither revoked nor expired) tokens per user: a script making tokens in a loop
# must not fill the config DB (the unit's flash) nor the admins' token list.
MAX_LIVE_TOKENS = 100
# A token revoked or expired this long ago is deleted (the audit log keeps its story).
TOKEN_KEEP_S = 30 * 86400.0


PasswordRejected = Invalid


# -- tables -----------------------------------------------------------------------


class User(ConfigModel):
    name = pw.CharField(max_length=48, unique=True)
    role = pw.CharField(max_length=16)
    password_hash = pw.TextField()
    created_at = pw.FloatField()
    created_by = pw.TextField(default="")
    disabled = pw.BooleanField(default=False)
    last_login_at = pw.FloatField(null=True)
    last_login_from = pw.TextField(null=True)
    password_changed_at = pw.FloatField(null=True)

    class Meta:
        table_name = "web_user"

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "disabled": self.disabled,
            "last_login_at": self.last_login_at,
            "last_login_from": self.last_login_from,
            "password_changed_at": self.password_changed_at,
        }


class ApiToken(ConfigModel):
    user = pw.CharField(max_length=48, index=True)
    name = pw.TextField(default="")
    role = pw.CharField(max_length=16)
    digest = pw.CharField(max_length=64, unique=True)
    prefix = pw.CharField(max_length=16)
    created_at = pw.FloatField()
    expires_at = pw.FloatField(null=True)
    last_used_at = pw.FloatField(null=True)
    last_used_from = pw.TextField(null=True)
    last_audit_at = pw.FloatField(null=True)
    revoked_at = pw.FloatField(null=True)
    revoked_by = pw.TextField(null=True)

    class Meta:
        table_name = "web_token"

    @property
    def parent_id(self) -> int | None:
        """The id of the token this one was made with (None: made at a login or the CLI)."""
        row = TokenParent.get_or_none(TokenParent.token == self.id)
        return row.parent if row is not None else None

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "parent": self.parent_id,
            "user": self.user,
            "name": self.name,
            "role": self.role,
            "prefix": self.prefix,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_used_at": self.last_used_at,
            "last_used_from": self.last_used_from,
            "revoked_at": self.revoked_at,
            "revoked_by": self.revoked_by,
        }


class TokenParent(ConfigModel):
    """Which token a token was made with (`Bearer <parent>` on POST /api/tokens).

    A table of its own rather than a column of web_token: `Store` makes missing tables
    in an existing database (`create_tables(safe=True)`) but adds no columns, so a
    unit's database from before keeps working; its tokens simply have no parent."""

    token = pw.IntegerField(primary_key=True)
    parent = pw.IntegerField(index=True)

    class Meta:
        table_name = "web_token_parent"


class LoginThrottle(ConfigModel):
    # "pair:<name tag>@<source>", "addr:<source>", "user:<name tag>"
    key = pw.CharField(max_length=200, primary_key=True)
    failures = pw.IntegerField(default=0)
    last_failure_at = pw.FloatField()
    locked_until = pw.FloatField(default=0.0)

    class Meta:
        table_name = "web_throttle"


class ThrottleKey(ConfigModel):
    """The key of `name_tag` (one row), made at first use."""

    secret = pw.CharField(max_length=64)

    class Meta:
        table_name = "web_throttle_key"


class WebSession(ConfigModel):
    digest = pw.CharField(max_length=64, primary_key=True)  # sha256 of the cookie value
    user = pw.CharField(max_length=48, index=True)
    csrf = pw.CharField(max_length=64)
    created_at = pw.FloatField()
    last_seen_at = pw.FloatField()
    source = pw.TextField(default="")

    class Meta:
        table_name = "web_session"


# -- roles ----------------------------------------------------------------------------


def rank(role: str) -> int:
    try:
        return ROLES.index(role)
    except ValueError:
        raise Invalid(f"unknown role {role!r} (roles: {', '.join(ROLES)})", field="role")


def at_least(role: str, needed: str) -> bool:
    return rank(role) >= rank(needed)


# -- passwords ------------------------------------------------------------------------

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory parameters (64 MiB, t=3, p=4)

# argon2 costs 64 MiB and ~0.1 s of CPU per hash: unbounded, a burst of logins (16 at once
# from one address, all inside the free failures) took each gunicorn worker (8 threads) to
# ~580 MB and a viewer's /api/status to 4 s. At most HASH_SLOTS hash at once per process;
# a caller that gets no slot within HASH_WAIT_S is told to come back (Busy: 429 with
# Retry-After) rather than queued, so a flood costs memory and CPU for HASH_SLOTS only.
HASH_SLOTS = 2
HASH_WAIT_S = 0.5
BUSY_RETRY_S = 1.0
_hash_slots = threading.BoundedSemaphore(HASH_SLOTS)

T = TypeVar("T")


@contextmanager
def _hash_slot() -> Iterator[None]:
    if not _hash_slots.acquire(timeout=HASH_WAIT_S):
        raise Busy(
            f"busy checking other passwords: try again in {BUSY_RETRY_S:.0f} s",
            retry_after=BUSY_RETRY_S,
        )
    try:
        yield
    finally:
        _hash_slots.release()


def _argon2(fn: Callable[..., T], *args: str) -> T:
    """Run one `_hasher` call (hash or verify) in a hash slot (Busy when none is free)."""
    with _hash_slot():
        return fn(*args)


def set_hasher(hasher: PasswordHasher) -> None:
    """Tests use cheap parameters; a hash records its parameters, so old ones still verify."""
    global _hasher, _DUMMY_HASH
    _hasher = hasher
    _DUMMY_HASH = None


_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = _argon2(_hasher.hash, secrets.token_hex(16))
    return _DUMMY_HASH


@functools.cache
def common_passwords() -> frozenset[str]:
    path = Path(__file__).with_name("common-passwords.txt")
    words = (w.strip().lower() for w in path.read_text().splitlines())
    return frozenset(w for w in words if w and not w.startswith("#"))


def check_password(password: str, username: str) -> None:
    """PasswordRejected (field `password`) saying why, or None when it is acceptable."""
    if len(password) < MIN_PASSWORD:
        raise PasswordRejected(
            f"must be at least {MIN_PASSWORD} characters (got {len(password)})", field="password"
        )
    if len(password) > MAX_PASSWORD:
        raise PasswordRejected(f"must be at most {MAX_PASSWORD} characters", field="password")
    low = password.lower()
    if low == username.lower() or low.replace(username.lower(), "") == "":
        raise PasswordRejected("must not be the user name", field="password")
    if low in common_passwords() or len(set(password)) < 4:
        raise PasswordRejected("is too common or too easy to guess", field="password")


def check_username(name: str) -> None:
    if not NAME_RE.match(name):
        raise Invalid(
            "must be 1-48 characters of a-z, 0-9, '-' and '_', starting with a letter or digit",
            field="username",
        )


# -- users ------------------------------------------------------------------------------


def admin_exists() -> bool:
    return (
        User.select().where((User.role == "admin") & (User.disabled == False)).exists()  # noqa: E712
    )


def get_user(name: str) -> User:
    user = User.get_or_none(User.name == name)
    if user is None:
        raise NotFound(f"no user {name!r}")
    return user


def list_users() -> list[User]:
    return list(User.select().order_by(User.name))


def create_user(name: str, role: str, password: str, *, by: str, now: float) -> User:
    check_username(name)
    rank(role)
    check_password(password, name)
    if User.get_or_none(User.name == name) is not None:
        raise Conflict(f"user {name!r} exists", field="username")
    return User.create(
        name=name,
        role=role,
        password_hash=_argon2(_hasher.hash, password),
        created_at=now,
        created_by=by,
        password_changed_at=now,
    )


def _is_last_admin(user: User) -> bool:
    if user.role != "admin" or user.disabled:
        return False
    others = User.select().where(
        (User.role == "admin") & (User.disabled == False) & (User.id != user.id)  # noqa: E712
    )
    return not others.exists()


def update_user(
    name: str,
    *,
    now: float,
    role: str | None = None,
    password: str | None = None,
    disabled: bool | None = None,
) -> User:
    """Change a user; the last enabled admin cannot be demoted or disabled (Conflict).

    A new password revokes the user's tokens and ends every session of theirs, the one
    that made the change too (a copy of its cookie would go on with it; PUT
    /api/session/password hands the user a new one); disabling ends every session and
    revokes every token, for good (enabling the user again brings none back).
    """
    user = get_user(name)
    db = User._meta.database
    with db.atomic():
        if role is not None:
            rank(role)
            if role != "admin" and _is_last_admin(user):
                raise Conflict("the last admin cannot be demoted", field="role")
            user.role = role
        if disabled is not None:
            if disabled and _is_last_admin(user):
                raise Conflict("the last admin cannot be disabled", field="disabled")
            user.disabled = disabled
        if password is not None:
            check_password(password, name)
            user.password_hash = _argon2(_hasher.hash, password)
            user.password_changed_at = now
        user.save()
        if password is not None:
            revoke_tokens(name, by="password change", now=now)
        if disabled:
            revoke_tokens(name, by="user disabled", now=now)
        if disabled or password is not None:
            end_sessions(name)
    return user


def delete_user(name: str) -> None:
    user = get_user(name)
    if _is_last_admin(user):
        raise Conflict("the last admin cannot be deleted")
    with User._meta.database.atomic():
        end_sessions(name)
        ids = ApiToken.select(ApiToken.id).where(ApiToken.user == name)
        TokenParent.delete().where(TokenParent.token.in_(ids)).execute()
        ApiToken.delete().where(ApiToken.user == name).execute()
        user.delete_instance()


# -- throttling -------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """The lockout figures: `web.lockout` of the desired revision, else the defaults."""

    free: dict[str, int]
    base: float
    top: float


DEFAULT_POLICY = Policy(dict(FREE_FAILURES), LOCK_BASE_S, LOCK_MAX_S)
_policy_cache: tuple[tuple[int, str] | None, Policy] = (None, DEFAULT_POLICY)


def policy() -> Policy:
    """`web.lockout` of the desired revision (read again when that revision changes; its
    id is one indexed query), the defaults without one or when it cannot be read."""
    global _policy_cache
    from appliance.state import revisions as revs

    try:
        rev = revs.desired(None)  # type: ignore[arg-type]  # the models' bound database
    except Exception:
        return _policy_cache[1]
    # by id and text: another data directory (a test's, a factory reset) reuses the ids
    rev_id = rev.id if rev is not None else None
    key = (rev.id, rev.document) if rev is not None else None
    if key == _policy_cache[0]:
        return _policy_cache[1]
    pol = DEFAULT_POLICY
    if rev is not None:
        try:
            lo = revs.config_of(rev).web.lockout
            pol = Policy(
                {
                    "pair": lo.free_failures,
                    "addr": lo.free_failures_per_address,
                    "user": lo.free_failures_per_account,
                },
                lo.lock_seconds,
                lo.lock_max_seconds,
            )
        except Exception:  # a stored revision that no longer validates: the defaults
            log.warning("revision %s: cannot read web.lockout; the defaults apply", rev_id)
    _policy_cache = (key, pol)
    return pol


def _lock_for(kind: str, failures: int) -> float:
    p = policy()
    over = failures - p.free[kind]
    if over < 0:
        return 0.0
    return min(p.top, p.base * 2 ** min(over, 32))


def _throttle_secret() -> bytes:
    row = ThrottleKey.get_or_none(ThrottleKey.id == 1)
    if row is None:
        ThrottleKey.insert(id=1, secret=secrets.token_hex(32)).on_conflict_ignore().execute()
        row = ThrottleKey.get_by_id(1)
    return row.secret.encode()


def name_tag(username: str) -> str:
    """A user name as throttle keys and the audit hold it: a keyed hash (16 hex digits).
    The same name gives the same tag on this unit; the tag does not give the name back,
    which matters when a password was typed into the name box."""
    return hmac.new(_throttle_secret(), username.encode(), hashlib.sha256).hexdigest()[:16]


def source_key(source: str | None) -> str:
    """How a source address counts: IPv4 as is, IPv6 per /64 (IPv4-mapped as IPv4),
    anything else as given (shortened), no address as `NO_SOURCE`."""
    if source is None:
        return NO_SOURCE
    try:
        a = ipaddress.ip_address(source)
    except ValueError:
        return "?" + source[:64]
    if isinstance(a, ipaddress.IPv6Address):
        if a.ipv4_mapped is not None:
            return str(a.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(a) >> 64 << 64, 64)))
    return str(a)


def _keys(username: str | None, source: str | None) -> dict[str, str]:
    keys = {}
    if source is not None:
        keys["addr"] = f"addr:{source_key(source)}"
    if username:
        tag = name_tag(username)
        keys["pair"] = f"pair:{tag}@{source_key(source)}"
        keys["user"] = f"user:{tag}"
    return keys


def throttle_left(key: str, now: float) -> float:
    row = LoginThrottle.get_or_none(LoginThrottle.key == key)
    if row is None:
        return 0.0
    return max(0.0, row.locked_until - now)


@dataclass(frozen=True)
class _Counted:
    """One counted failure, as `_uncount` takes it back."""

    key: str
    before: tuple[int, float, float] | None  # (failures, last failure, locked until); no row
    failures: int  # the count it made


def _count_row(key: str, now: float) -> _Counted:
    kind = key.split(":", 1)[0]
    with LoginThrottle._meta.database.atomic():
        row = LoginThrottle.get_or_none(LoginThrottle.key == key)
        if row is None:
            row = LoginThrottle(key=key, failures=0, last_failure_at=now, locked_until=0.0)
            fresh, before = True, None
        else:
            fresh, before = False, (row.failures, row.last_failure_at, row.locked_until)
            if now - row.last_failure_at > FORGET_AFTER_S and now >= row.locked_until:
                row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        lock = _lock_for(kind, row.failures)
        row.locked_until = now + lock if lock else 0.0
        row.save(force_insert=fresh)
    return _Counted(key, before, row.failures)


def _count(key: str, now: float) -> tuple[int, float]:
    """Count a failure for `key`: (its count now, the lock it now has in seconds)."""
    c = _count_row(key, now)
    return c.failures, _lock_for(key.split(":", 1)[0], c.failures)


def _uncount(c: _Counted) -> None:
    """Take back a failure counted before its hash turned out right: the row as it was,
    when nothing counted on it since; else one failure less (the others' lock stands)."""
    row = LoginThrottle.get_or_none(LoginThrottle.key == c.key)
    if row is None:
        return
    if row.failures != c.failures:
        row.failures = max(0, row.failures - 1)
        row.save()
    elif c.before is None:
        row.delete_instance()
    else:
        row.failures, row.last_failure_at, row.locked_until = c.before
        row.save()


def record_failure(key: str, now: float) -> float:
    """Count a failure for one key ("pair:…", "addr:…", "user:…"); return its lock (s)."""
    return _count(key, now)[1]


def record_source_failure(source: str | None, now: float) -> float:
    """A failure that names no account (a wrong API token or setup code)."""
    if source is None:
        return 0.0
    return record_failure(f"addr:{source_key(source)}", now)


def record_login_failure(username: str, source: str | None, now: float) -> list[_Counted]:
    """Count a failed login; return what it counted (for `_uncount`)."""
    keys = _keys(username, source)
    pair = _count_row(keys["pair"], now)
    counted = [pair]
    if pair.failures == 1:  # a source this account's count has not seen (recently)
        counted.append(_count_row(keys["user"], now))
    if "addr" in keys:
        counted.append(_count_row(keys["addr"], now))
    return counted


def clear_failures(key: str) -> None:
    LoginThrottle.delete().where(LoginThrottle.key == key).execute()


def check_throttle(
    username: str | None, source: str | None, now: float, *, trusted: bool = False
) -> None:
    """Throttled when the (account, source) pair, the source, or (unless `trusted`: the
    mgmt side) the account is locked; see the module docstring. Every attempt that may
    count a failure asks here first, so the forgotten rows are pruned here (a unit that
    scripts use with tokens, where nobody logs in, prunes the rows of wrong tokens too)."""
    if _due("throttle", now):
        prune_throttle(now)
    keys = _keys(username, source)
    if trusted:
        keys.pop("user", None)
    left = max((throttle_left(k, now) for k in keys.values()), default=0.0)
    if left > 0:
        raise Throttled(f"too many failed attempts: try again in {left:.0f} s", retry_after=left)


def prune_throttle(now: float) -> int:
    """Delete the rows whose count is forgotten and whose lock is over."""
    return (
        LoginThrottle.delete()
        .where(
            (LoginThrottle.last_failure_at < now - FORGET_AFTER_S)
            & (LoginThrottle.locked_until <= now)
        )
        .execute()
    )


_last_prune: dict[str, float] = {}


def _due(what: str, now: float) -> bool:
    """At most every PRUNE_EVERY_S per process (a clock that went back counts as due)."""
    last = _last_prune.get(what)
    if last is not None and 0 <= now - last < PRUNE_EVERY_S:
        return False
    _last_prune[what] = now
    return True


# -- login ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginResult:
    user: str
    role: str


def _check_password(
    username: str, password: str, *, source: str | None, now: float, trusted: bool
) -> User | None:
    """The user when the password is right, throttled; a failure is counted.

    The attempt is counted *before* the hash, in one transaction with the throttle check
    (the config DB's transactions are IMMEDIATE: across processes too), so a burst of
    concurrent guesses is counted as it arrives, not after all of them passed the check.
    A right password takes its count back (`_uncount`); an attempt refused as Busy keeps
    it (a flood of those locks its source like failures would)."""
    with LoginThrottle._meta.database.atomic():
        check_throttle(username, source, now, trusted=trusted)
        counted = record_login_failure(username, source, now)
    user = User.get_or_none(User.name == username)
    ok = False
    try:
        if user is None:
            _argon2(_hasher.verify, _dummy_hash(), password)
        else:
            ok = _argon2(_hasher.verify, user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None or user.disabled:
        return None
    with LoginThrottle._meta.database.atomic():
        clear_failures(_keys(username, source)["pair"])
        for c in counted[1:]:  # the pair's count is cleared whole
            _uncount(c)
    return user


def login(
    username: str,
    password: str,
    *,
    source: str | None,
    now: float,
    trusted: bool = False,
) -> LoginResult | None:
    """Check a password, with throttling. Throttled while locked; None when wrong.

    An unknown user costs the same hash as a known one, and counts like one, so the
    answer does not tell which names exist. `trusted`: the source is on the mgmt side
    (the account-wide count does not apply; see the module docstring).
    """
    user = _check_password(username, password, source=source, now=now, trusted=trusted)
    if user is None:
        return None
    user.last_login_at = now
    user.last_login_from = source
    if _hasher.check_needs_rehash(user.password_hash):
        try:
            user.password_hash = _argon2(_hasher.hash, password)
        except Busy:
            pass  # the old hash still verifies: rehash at a later login
    user.save()
    return LoginResult(user.name, user.role)


def verify_password(
    username: str, password: str, *, source: str | None, now: float, trusted: bool = False
) -> bool:
    """Whether `password` is the user's (e.g. the current one, to change it): throttled
    and counted like a login, but not recorded as one."""
    return _check_password(username, password, source=source, now=now, trusted=trusted) is not None


def audit_name(username: str) -> str:
    """How the audit names the user of a failed login: the name when such a user
    exists, else `UNKNOWN_USER` (what was typed may be a password)."""
    if User.get_or_none(User.name == username) is not None:
        return username
    return UNKNOWN_USER


def failed_login_name(username: str) -> tuple[str, str]:
    """The actor and detail of a failed login's audit row: the name when such a user
    exists; else `UNKNOWN_USER` and the name's tag (what was typed may be a password)."""
    actor = audit_name(username)
    return actor, ("" if actor == username else f"name #{name_tag(username)}")


def _attempt(
    username: str, password: str, source: str | None, now: float
) -> tuple[LoginResult | None, str]:
    """`login` for another service: (the result, and ok, failed or throttled)."""
    try:
        result = login(username, password, source=source, now=now)
    except Throttled:
        return None, "throttled"
    return result, "ok" if result else "failed"


def authenticate(
    username: str, password: str, *, source: str | None = None, now: float | None = None
) -> str | None:
    """The user's role when the password is right (and not throttled), else None.

    For other services that log people in with the same accounts (the OPC UA server);
    it works in any process with a Store open and feeds the same throttling. `source`
    is the peer's address; without one, the failures count in a bucket of their own
    (`NO_SOURCE`) and lock no real source out.
    """
    result, _ = _attempt(username, password, source, time.time() if now is None else now)
    return result.role if result else None


def audited_authenticate(store: Store, service: str) -> Callable[..., str | None]:
    """`authenticate` for another service (the OPC UA server) that also leaves the audit
    row a web login leaves (CR 1.1, 2.8): action `login`, source `<service>:<address>`,
    result ok, failed or throttled; a failed login named as `failed_login_name` says."""

    def check(
        username: str, password: str, *, source: str | None = None, now: float | None = None
    ) -> str | None:
        now = time.time() if now is None else now
        where = f"{service}:{source or 'unknown'}"
        result, outcome = _attempt(username, password, source, now)
        if result is not None:
            store.audit(result.user, "login", source=where, at=now)
            return result.role
        actor, detail = failed_login_name(username)
        store.audit(actor, "login", result=outcome, detail=detail, source=where, at=now)
        return None

    return check


# -- sessions -----------------------------------------------------------------------------


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class SessionInfo:
    digest: str
    user: str
    role: str
    csrf: str
    created_at: float
    last_seen_at: float
    idle_expires_at: float
    expires_at: float


def create_session(
    user: str, *, source: str | None, now: float, replace: str | None = None
) -> tuple[str, str]:
    """A new session for `user`: (cookie value, csrf token). `replace`: the old cookie."""
    sid = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    with WebSession._meta.database.atomic():
        if replace:
            WebSession.delete().where(WebSession.digest == _digest(replace)).execute()
        WebSession.create(
            digest=_digest(sid),
            user=user,
            csrf=csrf,
            created_at=now,
            last_seen_at=now,
            source=source or "",
        )
    return sid, csrf


def lookup_session(sid: str, *, now: float, idle_s: float, max_s: float) -> SessionInfo | None:
    """The live session of this cookie, touched; None (and deleted) when it has expired."""
    if _due("sessions", now):
        prune_sessions(now, max_s, idle_s=idle_s)
    if not sid or len(sid) > 200:
        return None
    row = WebSession.get_or_none(WebSession.digest == _digest(sid))
    if row is None:
        return None
    if now - row.last_seen_at > idle_s or now - row.created_at > max_s:
        row.delete_instance()
        return None
    user = User.get_or_none(User.name == row.user)
    if user is None or user.disabled:
        row.delete_instance()
        return None
    if now - row.last_seen_at >= TOUCH_EVERY_S:
        WebSession.update(last_seen_at=now).where(WebSession.digest == row.digest).execute()
        row.last_seen_at = now
    return SessionInfo(
        digest=row.digest,
        user=row.user,
        role=user.role,
        csrf=row.csrf,
        created_at=row.created_at,
        last_seen_at=row.last_seen_at,
        idle_expires_at=min(row.last_seen_at + idle_s, row.created_at + max_s),
        expires_at=row.created_at + max_s,
    )


def end_session(sid: str) -> bool:
    return WebSession.delete().where(WebSession.digest == _digest(sid)).execute() > 0


def end_sessions(user: str) -> int:
    """End every session of `user`."""
    return WebSession.delete().where(WebSession.user == user).execute()


def prune_sessions(now: float, max_s: float, *, idle_s: float | None = None) -> int:
    """Delete the sessions past their absolute (and, given `idle_s`, idle) timeout."""
    ended = WebSession.created_at < now - max_s
    if idle_s is not None:
        ended = ended | (WebSession.last_seen_at < now - idle_s)
    return WebSession.delete().where(ended).execute()


# -- API tokens ----------------------------------------------------------------------------


def create_token(
    user: str,
    *,
    role: str | None,
    name: str,
    now: float,
    expires_at: float | None = None,
    not_after: float | None = None,
    parent: int | None = None,
) -> tuple[ApiToken, str]:
    """A new token (row, the secret shown once). Its role is at most the user's.

    `not_after`: the expiry of the token this one is made with; the new one expires at
    the latest then (without `expires_at`: then). `parent`: that token's id; revoking
    it revokes this one (and its children), and this one works only while it does.
    A chain is at most `MAX_TOKEN_GENERATIONS` long (each use checks every ancestor).
    """
    if _due("tokens", now):
        prune_tokens(now)
    owner = get_user(user)
    role = role or owner.role
    if rank(role) > rank(owner.role):
        raise Invalid(f"a token's role cannot exceed its user's ({owner.role})", field="role")
    if expires_at is not None and expires_at <= now:
        raise Invalid("must be in the future", field="expires_at")
    if not_after is not None:
        expires_at = not_after if expires_at is None else min(expires_at, not_after)
    if parent is not None and len(_ancestors(parent)) >= MAX_TOKEN_GENERATIONS:
        raise Invalid(
            f"a token made with a token made with ... may be at most "
            f"{MAX_TOKEN_GENERATIONS} deep: make this one at a login",
            field="Authorization",
        )
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with ApiToken._meta.database.atomic():
        if _live_tokens(user, now) >= MAX_LIVE_TOKENS:
            raise Conflict(
                f"{user} has {MAX_LIVE_TOKENS} live API tokens, the most a user may have: "
                "revoke one first",
                field="name",
            )
        row = ApiToken.create(
            user=user,
            name=name,
            role=role,
            digest=_digest(secret),
            prefix=secret[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + 8],
            created_at=now,
            expires_at=expires_at,
        )
        if parent is not None:
            TokenParent.create(token=row.id, parent=parent)
    return row, secret


def _live_tokens(user: str, now: float) -> int:
    return (
        ApiToken.select()
        .where(
            (ApiToken.user == user)
            & ApiToken.revoked_at.is_null()
            & (ApiToken.expires_at.is_null() | (ApiToken.expires_at > now))
        )
        .count()
    )


def prune_tokens(now: float) -> int:
    """Delete the tokens revoked or expired more than `TOKEN_KEEP_S` ago, with their
    parent links. A live token made with one of them keeps its own link: the chain check
    finds the parent gone and refuses it, as it did while the parent was revoked."""
    before = now - TOKEN_KEEP_S
    with ApiToken._meta.database.atomic():
        gone = [
            r.id
            for r in ApiToken.select(ApiToken.id).where(
                (ApiToken.revoked_at < before) | (ApiToken.expires_at < before)
            )
        ]
        if not gone:
            return 0
        TokenParent.delete().where(TokenParent.token.in_(gone)).execute()
        return ApiToken.delete().where(ApiToken.id.in_(gone)).execute()


def _ancestors(token_id: int) -> list[int]:
    """`token_id` and the ids of the tokens it was made with, nearest first (a chain
    longer than `MAX_TOKEN_GENERATIONS` is cut there: ids only grow, so no cycle)."""
    chain = [token_id]
    while len(chain) <= MAX_TOKEN_GENERATIONS:
        row = TokenParent.get_or_none(TokenParent.token == chain[-1])
        if row is None:
            break
        chain.append(row.parent)
    return chain


def _descendants(token_id: int) -> list[int]:
    """The ids of the tokens made with `token_id`, with theirs, and so on."""
    out: list[int] = []
    frontier = [token_id]
    while frontier:
        children = [r.token for r in TokenParent.select().where(TokenParent.parent.in_(frontier))]
        children = [c for c in children if c not in out]
        out.extend(children)
        frontier = children
    return out


@dataclass(frozen=True)
class TokenUse:
    token_id: int
    prefix: str
    user: str
    role: str
    audit_due: bool  # the caller should write a token.use audit row now
    expires_at: float | None = None


def use_token(secret: str, *, source: str | None, now: float) -> TokenUse | None:
    """The principal behind a bearer token; None if unknown, revoked, expired or disabled."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > 200:
        return None
    row = ApiToken.get_or_none(ApiToken.digest == _digest(secret))
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and now >= row.expires_at:
        return None
    # Constant-time compare of what we looked up by digest (the lookup itself is by hash).
    if not hmac.compare_digest(row.digest, _digest(secret)):
        return None
    if not _chain_alive(row.id, now):
        return None
    user = User.get_or_none(User.name == row.user)
    if user is None or user.disabled:
        return None
    role = ROLES[min(rank(row.role), rank(user.role))]
    due = row.last_audit_at is None or now - row.last_audit_at >= TOKEN_AUDIT_EVERY_S
    if due or row.last_used_at is None or now - row.last_used_at >= TOUCH_EVERY_S:
        fields = {"last_used_at": now, "last_used_from": source}
        if due:
            fields["last_audit_at"] = now
        ApiToken.update(**fields).where(ApiToken.id == row.id).execute()
    return TokenUse(row.id, row.prefix, row.user, role, due, row.expires_at)


def _chain_alive(token_id: int, now: float) -> bool:
    """Whether every token `token_id` was made with (parent, its parent, ...) still
    exists, is not revoked and has not expired. `revoke_token` revokes the children too;
    this holds whatever revoked the parent."""
    ancestors = _ancestors(token_id)[1:]
    if not ancestors:
        return True
    rows = list(ApiToken.select().where(ApiToken.id.in_(ancestors)))
    if len(rows) != len(ancestors):
        return False  # an ancestor is gone
    return all(r.revoked_at is None and (r.expires_at is None or now < r.expires_at) for r in rows)


def list_tokens(user: str | None = None) -> list[ApiToken]:
    q = ApiToken.select().order_by(ApiToken.id)
    if user is not None:
        q = q.where(ApiToken.user == user)
    return list(q)


def revoke_token(token_id: int, *, by: str, now: float, owner: str | None = None) -> ApiToken:
    """Revoke a token and every token made with it (and theirs); with `owner`, only one
    of that user's (others look absent). The descendants' `revoked_by` says why."""
    row = ApiToken.get_or_none(ApiToken.id == token_id)
    if row is None or (owner is not None and row.user != owner):
        raise NotFound(f"no token {token_id}")
    with ApiToken._meta.database.atomic():
        if row.revoked_at is None:
            row.revoked_at = now
            row.revoked_by = by
            row.save()
        below = _descendants(row.id)
        if below:
            ApiToken.update(revoked_at=now, revoked_by=f"{by}: parent {row.prefix} revoked").where(
                ApiToken.id.in_(below) & ApiToken.revoked_at.is_null()
            ).execute()
    return row


def revoke_tokens(user: str, *, by: str, now: float) -> int:
    """Revoke every live token of `user` (a new password: the old trust ends)."""
    return (
        ApiToken.update(revoked_at=now, revoked_by=by)
        .where((ApiToken.user == user) & ApiToken.revoked_at.is_null())
        .execute()
    )


# The accounts' tables (config DB): users, API tokens, login throttling, sessions;
# handed to `Store` by the processes that use them.
MODELS: tuple[type[pw.Model], ...] = (
    User,
    ApiToken,
    TokenParent,
    LoginThrottle,
    ThrottleKey,
    WebSession,
)
