"""The identity fold: projects, users, role assignments, revoked tokens and quotas from identity.* events.

Style: `IdentityState.apply(event)` changes the state in place, because the identity topic is folded
from its start and copying every table per event would make that quadratic. `evolve(state, event)`
is the decider-shaped spelling of the same thing and returns the object it was given. Events of
other types are ignored, so the fold can be fed a mixed stream.

There are no domain events: a domain is named by its id, compared case-insensitively, so keystone's
`{"domain": {"name": "Default"}}` and `{"domain": {"id": "default"}}` both mean domain `default`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from eventsvm.events.model import Event, EventType
from eventsvm.identity.passwords import verify_password
from eventsvm.identity.quota import DEFAULT_LIMITS, QuotaLimits
from eventsvm.identity.tokens import TokenClaims, epoch_ms
from eventsvm.state.names import claim, release, rename

# keystone's bootstrap domain; the only one with a name of its own (any other is named by its id)
DEFAULT_DOMAIN_ID = "default"
DEFAULT_DOMAIN_NAME = "Default"


def domain_name(domain_id: str) -> str:
    """A domain's name as keystone shows it: `Default` for the default domain, else its id."""
    return DEFAULT_DOMAIN_NAME if domain_id.lower() == DEFAULT_DOMAIN_ID else domain_id


# keystone's own 401 text: it must not tell a caller which of user, password or project was wrong.
AUTH_FAILED_MESSAGE = "The request you have made requires authentication."


class Unauthorized(Exception):
    """Authentication failed; the message is always the same generic text."""

    def __init__(self) -> None:
        super().__init__(AUTH_FAILED_MESSAGE)


@dataclass(slots=True)
class Project:
    """A keystone project (tenant): the owner of servers and the unit of quota."""

    id: str
    name: str
    domain_id: str = "default"
    enabled: bool = True
    description: str = ""
    # tokens scoped to the project issued before this moment (ms) are dead: set when it is disabled,
    # as keystone revokes them then; re-enabling does not revive them
    tokens_valid_after_ms: int = 0


@dataclass(slots=True)
class User:
    """A keystone user; only the salted hash of the password is ever known."""

    id: str
    name: str
    password_hash: str = field(repr=False)
    domain_id: str = "default"
    default_project_id: str | None = None
    enabled: bool = True
    # Tokens issued before this moment (ms) are dead: set when the user is disabled or the password
    # changes, as keystone revokes a user's tokens then; re-enabling does not revive them.
    tokens_valid_after_ms: int = 0


def _domain_key(domain: str) -> str:
    return domain.lower()


# what an update changes the same way on either
_Holder = TypeVar("_Holder", User, Project)


def _gone(holder: User | Project | None, kind: str, issued_at_ms: int | None, voided_by: str) -> str | None:
    """Why a token no longer stands for its user or project (`kind`): gone, disabled, or issued
    before what voided the tokens then issued; None while it stands."""
    if holder is None:
        return f"{kind} not found"
    if not holder.enabled:
        return f"{kind} disabled"
    if issued_at_ms is not None and issued_at_ms < holder.tokens_valid_after_ms:
        return f"token issued before the {kind} {voided_by}"
    return None


def _as_ms(value: int | datetime) -> int:
    # the codec may hand timestamp-millis fields over as ints or as datetimes
    return epoch_ms(value) if isinstance(value, datetime) else int(value)


# Checked when the user name is unknown, so that answer costs the same scrypt as a wrong password and
# the response time does not reveal which names exist. Nobody knows a password that matches it.
_DECOY_HASH = "scrypt$16384$8$1$YHUDZtVjxWHS1eqpyiEaeA$Rm5jeF+LHZVM/OXhSvv4TC1DH3OIo3OUpiGJAxcCLso"


class IdentityState:
    """Everything keystone knows, rebuilt from the identity topic; see the module doc for the style."""

    def __init__(self) -> None:
        self.projects: dict[str, Project] = {}
        self.users: dict[str, User] = {}
        self.quota_sets: dict[str, QuotaLimits] = {}
        # audit id -> the token's expiry (ms), so entries can be dropped once the token is dead anyway
        self.revoked: dict[str, int] = {}
        self._assignments: dict[tuple[str, str], set[str]] = {}
        self._project_names: dict[tuple[str, str], str] = {}
        self._user_names: dict[tuple[str, str], str] = {}
        # event ids of creates that named a name taken in its domain (see eventsvm.state.names)
        self.refused: set[str] = set()
        self._handlers: dict[EventType, Callable[[Event], None]] = {
            EventType.PROJECT_CREATED: self._project_created,
            EventType.USER_CREATED: self._user_created,
            EventType.USER_UPDATED: self._user_updated,
            EventType.ROLE_ASSIGNED: self._role_assigned,
            EventType.TOKEN_REVOKED: self._token_revoked,
            EventType.QUOTA_SET: self._quota_set,
            EventType.PROJECT_UPDATED: self._project_updated,
            EventType.PROJECT_DELETED: self._project_deleted,
            EventType.USER_DELETED: self._user_deleted,
            EventType.ROLE_UNASSIGNED: self._role_unassigned,
        }

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> IdentityState:
        """The state after folding `events` in order over an empty state."""
        state = cls()
        for event in events:
            state.apply(event)
        return state

    def apply(self, event: Event) -> None:
        """Fold one event into the state (in place); non-identity events change nothing."""
        handler = self._handlers.get(event.type)
        if handler is not None:
            handler(event)

    # lookups

    def project(self, project_id: str) -> Project | None:
        """The project with this id, if any."""
        return self.projects.get(project_id)

    def project_by_name(self, name: str, domain: str) -> Project | None:
        """The project called `name` in `domain` (id or name, case-insensitive), if any."""
        project_id = self._project_names.get((_domain_key(domain), name))
        return None if project_id is None else self.projects.get(project_id)

    def user(self, user_id: str) -> User | None:
        """The user with this id, if any."""
        return self.users.get(user_id)

    def user_by_name(self, name: str, domain: str) -> User | None:
        """The user called `name` in `domain` (id or name, case-insensitive), if any."""
        user_id = self._user_names.get((_domain_key(domain), name))
        return None if user_id is None else self.users.get(user_id)

    def domain_ids(self) -> list[str]:
        """The domains in use: the default one and every other a project or user names (lower case)."""
        used = {p.domain_id.lower() for p in self.projects.values()} | {
            u.domain_id.lower() for u in self.users.values()}
        return [DEFAULT_DOMAIN_ID, *sorted(used - {DEFAULT_DOMAIN_ID})]

    def roles_of(self, user_id: str, project_id: str) -> frozenset[str]:
        """The roles assigned to the user on the project (no implied roles; see policy)."""
        return frozenset(self._assignments.get((user_id, project_id), ()))

    def is_revoked(self, audit_id: str) -> bool:
        """True when the token with this audit id was revoked."""
        return audit_id in self.revoked

    def drop_expired_revocations(self, now_ms: int) -> int:
        """Forget revocations of tokens that have expired by `now_ms`; returns how many went."""
        expired = [audit_id for audit_id, expires in self.revoked.items() if expires <= now_ms]
        for audit_id in expired:
            del self.revoked[audit_id]
        return len(expired)

    # decisions

    def authenticate(
        self, user_name: str, user_domain: str, password: str, project_name: str, project_domain: str
    ) -> tuple[User, Project, tuple[str, ...]]:
        """The user, project and roles for a password auth scoped to a project.

        Raises Unauthorized, with the same message whatever was wrong, unless the user exists, is
        enabled and the password matches, and the project exists, is enabled and the user has a role on it.
        """
        user = self.user_by_name(user_name, user_domain)
        password_ok = verify_password(password, user.password_hash if user else _DECOY_HASH)
        if user is None or not password_ok or not user.enabled:
            raise Unauthorized()
        project = self.project_by_name(project_name, project_domain)
        if project is None or not project.enabled:
            raise Unauthorized()
        roles = tuple(sorted(self.roles_of(user.id, project.id)))
        if not roles:
            raise Unauthorized()
        return user, project, roles

    def check_token_still_valid(self, claims: TokenClaims) -> str | None:
        """None while the identity behind a (cryptographically valid) token still stands, else why not."""
        c = claims
        return self._refusal(c.user_id, c.project_id, c.audit_id, c.chain_audit_id, c.roles, c.issued_at_ms)

    def check_request(
        self, user_id: str, project_id: str, audit_id: str, chain_audit_id: str | None = None
    ) -> str | None:
        """The same check for a request event, which carries the token's audit ids but not its claims."""
        return self._refusal(user_id, project_id, audit_id, chain_audit_id, (), None)

    def _refusal(
        self, user_id: str, project_id: str, audit_id: str, chain_audit_id: str | None,
        roles: Iterable[str], issued_at_ms: int | None,
    ) -> str | None:
        # a revoked first token takes its re-scoped descendants with it (keystone's audit chain)
        if self.is_revoked(audit_id) or (chain_audit_id is not None and self.is_revoked(chain_audit_id)):
            return "token revoked"
        user, project = self.users.get(user_id), self.projects.get(project_id)
        why = _gone(user, "user", issued_at_ms, "was disabled or changed password") or _gone(
            project, "project", issued_at_ms, "was disabled")
        if why is not None:
            return why
        assert user is not None and project is not None
        assigned = self._assignments.get((user.id, project.id), set())
        if not assigned or not set(roles) <= assigned:
            return "role assignment removed"
        return None

    # event handlers

    def _project_created(self, event: Event) -> None:
        body = event.body
        project = Project(
            id=body["id"],
            name=body["name"],
            domain_id=body.get("domain_id", "default"),
            enabled=body.get("enabled", True),
            description=body.get("description", ""),
        )
        # first claim wins: a later project of the same name in the domain never exists
        name = (_domain_key(project.domain_id), project.name)
        if claim(self._project_names, name, project.id, self.refused, event.event_id):
            self.projects[project.id] = project

    def _user_created(self, event: Event) -> None:
        body = event.body
        user = User(
            id=body["id"],
            name=body["name"],
            password_hash=body["password_hash"],
            domain_id=body.get("domain_id", "default"),
            default_project_id=body.get("default_project_id"),
            enabled=body.get("enabled", True),
        )
        name = (_domain_key(user.domain_id), user.name)
        if claim(self._user_names, name, user.id, self.refused, event.event_id):
            self.users[user.id] = user

    def _updated(self, holders: dict[str, _Holder], names: dict[tuple[str, str], str], event: Event
                 ) -> _Holder | None:
        """The user or project an update names, with the update's name and `enabled` taken; None
        when there is none, or when its new name is taken (then nothing changes, as for a create)."""
        holder = holders.get(event.body["id"])
        if holder is None:
            return None
        name = event.body.get("name")
        if name is not None:
            domain = _domain_key(holder.domain_id)
            if not rename(names, (domain, holder.name), (domain, name), holder.id, self.refused,
                          event.event_id):
                return None
            holder.name = name
        enabled = event.body.get("enabled")
        if enabled is not None:
            if holder.enabled and not enabled:
                holder.tokens_valid_after_ms = max(holder.tokens_valid_after_ms, event.occurred_at)
            holder.enabled = enabled
        return holder

    def _user_updated(self, event: Event) -> None:
        user = self._updated(self.users, self._user_names, event)
        if user is None:
            return
        body = event.body
        if body.get("default_project_id") is not None:
            user.default_project_id = body["default_project_id"]
        password_hash = body.get("password_hash")
        if password_hash is not None:
            user.password_hash = password_hash
            user.tokens_valid_after_ms = max(user.tokens_valid_after_ms, event.occurred_at)

    def _project_updated(self, event: Event) -> None:
        project = self._updated(self.projects, self._project_names, event)
        if project is not None and event.body.get("description") is not None:
            project.description = event.body["description"]

    def _project_deleted(self, event: Event) -> None:
        project = self.projects.pop(event.body["id"], None)
        if project is None:
            return
        release(self._project_names, (_domain_key(project.domain_id), project.name), project.id)
        self.quota_sets.pop(project.id, None)
        for pair in [pair for pair in self._assignments if pair[1] == project.id]:
            del self._assignments[pair]

    def _user_deleted(self, event: Event) -> None:
        user = self.users.pop(event.body["id"], None)
        if user is None:
            return
        release(self._user_names, (_domain_key(user.domain_id), user.name), user.id)
        for pair in [pair for pair in self._assignments if pair[0] == user.id]:
            del self._assignments[pair]

    def _role_unassigned(self, event: Event) -> None:
        body = event.body
        pair = (body["user_id"], body["project_id"])
        roles = self._assignments.get(pair)
        if roles is not None:
            roles.discard(body["role"])
            if not roles:
                del self._assignments[pair]

    def _role_assigned(self, event: Event) -> None:
        body = event.body
        self._assignments.setdefault((body["user_id"], body["project_id"]), set()).add(body["role"])

    def _token_revoked(self, event: Event) -> None:
        self.revoked[event.body["audit_id"]] = _as_ms(event.body["expires_at"])

    def _quota_set(self, event: Event) -> None:
        body = event.body
        before = quota_for(self, body["project_id"])
        # a v1 event names no server group limits: those the project had stay
        groups, members = body.get("server_groups"), body.get("server_group_members")
        self.quota_sets[body["project_id"]] = QuotaLimits(
            instances=body["instances"], cores=body["cores"], ram_mb=body["ram_mb"],
            server_groups=before.server_groups if groups is None else groups,
            server_group_members=before.server_group_members if members is None else members,
        )


def quota_for(state: IdentityState, project_id: str) -> QuotaLimits:
    """The limits in force for `project_id`: its last quota_set event, else nova's defaults."""
    return state.quota_sets.get(project_id, DEFAULT_LIMITS)


def evolve(state: IdentityState, event: Event) -> IdentityState:
    """Fold `event` into `state` in place and return it (the decider's evolve signature)."""
    state.apply(event)
    return state
