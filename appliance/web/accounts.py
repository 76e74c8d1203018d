"""Web accounts on the config DB: users, API tokens, login throttling and sessions.

Everything here is plain functions over peewee tables, usable from any process
that has a `Store` open (the web role, the CLI, the field role's OPC UA server):

- users: name, role (viewer < operator < admin), an argon2id hash, disabled flag,
  last login. Password policy: at least 12 characters, not in the shipped list of
  common passwords (``common-passwords.txt``), not the user name.
- API tokens: shown once; only their SHA-256 is stored, with an 8-character prefix
  people can recognise. A token's role is at most its user's role, checked again at
  every use (demoting or disabling a user demotes or disables their tokens).
- throttling, per account and per source address: the first `FREE_FAILURES` failed
  logins cost nothing, then each one locks the key for `LOCK_BASE_S` doubled per
  further failure (60 s, 120 s, 240 s ... at most `LOCK_MAX_S`). While locked,
  the password is not even checked (no oracle). A success clears the account's
  count; an address's count fades `FORGET_AFTER_S` after its last failure.
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
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

import peewee as pw
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from appliance.config.base import NAME_RE
from appliance.errors import ApplianceError, Conflict, NotFound
from appliance.state.db import ConfigModel

ROLES: tuple[str, ...] = ("viewer", "operator", "admin")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024

FREE_FAILURES = {"user": 5, "addr": 10}
LOCK_BASE_S = 60.0
LOCK_MAX_S = 3600.0
FORGET_AFTER_S = 3600.0

# Last-seen is written at most this often per session: a write per request would put an
# fsync (the config DB is synchronous=FULL) on every page poll. Idle timeouts are minutes.
TOUCH_EVERY_S = 15.0
# A token's use is audited at most this often per token (changes are audited each time).
TOKEN_AUDIT_EVERY_S = 60.0

TOKEN_PREFIX = "apl_"


class Invalid(ApplianceError):
    """A value a person gave is not acceptable (the field says which)."""

    code = "invalid"
    exit_code = 2


PasswordRejected = Invalid


class Throttled(ApplianceError):
    """Too many failures: try again in `retry_after` seconds."""

    code = "throttled"
    exit_code = 9

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


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

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
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


class LoginThrottle(ConfigModel):
    key = pw.CharField(max_length=200, primary_key=True)  # "user:alice" / "addr:10.99.0.1"
    failures = pw.IntegerField(default=0)
    last_failure_at = pw.FloatField()
    locked_until = pw.FloatField(default=0.0)

    class Meta:
        table_name = "web_throttle"


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


def set_hasher(hasher: PasswordHasher) -> None:
    """Tests use cheap parameters; a hash records its parameters, so old ones still verify."""
    global _hasher, _DUMMY_HASH
    _hasher = hasher
    _DUMMY_HASH = None


_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = _hasher.hash(secrets.token_hex(16))
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
        password_hash=_hasher.hash(password),
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
    """Change a user; the last enabled admin cannot be demoted or disabled (Conflict)."""
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
            user.password_hash = _hasher.hash(password)
            user.password_changed_at = now
        user.save()
        if disabled or password is not None:
            end_sessions(name)
    return user


def delete_user(name: str) -> None:
    user = get_user(name)
    if _is_last_admin(user):
        raise Conflict("the last admin cannot be deleted")
    with User._meta.database.atomic():
        end_sessions(name)
        ApiToken.delete().where(ApiToken.user == name).execute()
        user.delete_instance()


# -- throttling -------------------------------------------------------------------------


def _lock_for(kind: str, failures: int) -> float:
    over = failures - FREE_FAILURES[kind]
    if over < 0:
        return 0.0
    return min(LOCK_MAX_S, LOCK_BASE_S * 2**over)


def throttle_left(key: str, now: float) -> float:
    row = LoginThrottle.get_or_none(LoginThrottle.key == key)
    if row is None:
        return 0.0
    return max(0.0, row.locked_until - now)


def record_failure(key: str, now: float) -> float:
    """Count a failure for `key` ("user:x" or "addr:y"); return the lock it now has (s)."""
    kind = key.split(":", 1)[0]
    with LoginThrottle._meta.database.atomic():
        row = LoginThrottle.get_or_none(LoginThrottle.key == key)
        if row is None:
            row = LoginThrottle(key=key, failures=0, last_failure_at=now, locked_until=0.0)
            fresh = True
        else:
            fresh = False
            if now - row.last_failure_at > FORGET_AFTER_S and now >= row.locked_until:
                row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        lock = _lock_for(kind, row.failures)
        row.locked_until = now + lock if lock else 0.0
        row.save(force_insert=fresh)
    return lock


def clear_failures(key: str) -> None:
    LoginThrottle.delete().where(LoginThrottle.key == key).execute()


def check_throttle(username: str | None, source: str | None, now: float) -> None:
    """Throttled when the account or the address is locked."""
    keys = []
    if username:
        keys.append(f"user:{username}")
    if source:
        keys.append(f"addr:{source}")
    left = max((throttle_left(k, now) for k in keys), default=0.0)
    if left > 0:
        raise Throttled(f"too many failed attempts: try again in {left:.0f} s", retry_after=left)


# -- login ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginResult:
    user: str
    role: str


def login(username: str, password: str, *, source: str | None, now: float) -> LoginResult | None:
    """Check a password, with throttling. Throttled while locked; None when wrong.

    An unknown user costs the same hash as a known one, and counts against the name
    as well as the address, so the answer does not tell which names exist.
    """
    check_throttle(username, source, now)
    user = User.get_or_none(User.name == username)
    ok = False
    try:
        if user is None:
            _hasher.verify(_dummy_hash(), password)
        else:
            ok = _hasher.verify(user.password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if not ok or user is None or user.disabled:
        record_failure(f"user:{username}", now)
        if source:
            record_failure(f"addr:{source}", now)
        return None
    clear_failures(f"user:{username}")
    user.last_login_at = now
    user.last_login_from = source
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    user.save()
    return LoginResult(user.name, user.role)


def authenticate(
    username: str, password: str, *, source: str | None = None, now: float | None = None
) -> str | None:
    """The user's role when the password is right (and the account not locked), else None.

    For other services that log people in with the same accounts (the OPC UA server);
    it works in any process with a Store open and feeds the same throttling.
    """
    try:
        result = login(username, password, source=source, now=time.time() if now is None else now)
    except Throttled:
        return None
    return result.role if result else None


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
    return WebSession.delete().where(WebSession.user == user).execute()


def prune_sessions(now: float, max_s: float) -> int:
    return WebSession.delete().where(WebSession.created_at < now - max_s).execute()


# -- API tokens ----------------------------------------------------------------------------


def create_token(
    user: str, *, role: str | None, name: str, now: float, expires_at: float | None = None
) -> tuple[ApiToken, str]:
    """A new token (row, the secret shown once). Its role is at most the user's."""
    owner = get_user(user)
    role = role or owner.role
    if rank(role) > rank(owner.role):
        raise Invalid(f"a token's role cannot exceed its user's ({owner.role})", field="role")
    if expires_at is not None and expires_at <= now:
        raise Invalid("must be in the future", field="expires_at")
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken.create(
        user=user,
        name=name,
        role=role,
        digest=_digest(secret),
        prefix=secret[len(TOKEN_PREFIX) : len(TOKEN_PREFIX) + 8],
        created_at=now,
        expires_at=expires_at,
    )
    return row, secret


@dataclass(frozen=True)
class TokenUse:
    token_id: int
    prefix: str
    user: str
    role: str
    audit_due: bool  # the caller should write a token.use audit row now


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
    return TokenUse(row.id, row.prefix, row.user, role, due)


def list_tokens(user: str | None = None) -> list[ApiToken]:
    q = ApiToken.select().order_by(ApiToken.id)
    if user is not None:
        q = q.where(ApiToken.user == user)
    return list(q)


def revoke_token(token_id: int, *, by: str, now: float, owner: str | None = None) -> ApiToken:
    """Revoke a token; with `owner`, only one of that user's (others look absent)."""
    row = ApiToken.get_or_none(ApiToken.id == token_id)
    if row is None or (owner is not None and row.user != owner):
        raise NotFound(f"no token {token_id}")
    if row.revoked_at is None:
        row.revoked_at = now
        row.revoked_by = by
        row.save()
    return row
