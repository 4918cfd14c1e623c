"""Each service's default policy, as oslo.policy rules, and the enforcer that applies them.

The rule names and check strings are the secure-RBAC defaults nova, neutron, glance, cinder and
keystone ship since their 2023 releases (project reader reads, project member acts in its own
project, admin everywhere), restricted to the APIs this cloud serves. An operator overrides any of
them as they do for those services: a `<service>-policy.yaml` (nova-policy.yaml, neutron-policy.yaml,
glance-policy.yaml, cinder-policy.yaml, keystone-policy.yaml) in the cloud's policy directory;
oslo.policy re-reads a file when it changes.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

from oslo_config import cfg
from oslo_policy import policy as oslo

from eventsvm.identity.policy import ADMIN, effective_roles

# -- nova (nova/policies/base.py and the API modules) --------------------------------------------
_NOVA_ADMIN = "rule:context_is_admin"
_NOVA_READER = "rule:project_reader_or_admin"
_NOVA_MEMBER = "rule:project_member_or_admin"
_NOVA_ANY = "@"
_NOVA_OWNER_USER = "(rule:context_is_admin) or user_id:%(user_id)s"

_NOVA_RULES: dict[str, str] = {
    "context_is_admin": "role:admin",
    "admin_api": "is_admin:True",
    "project_member_api": "role:member and project_id:%(project_id)s",
    "project_reader_api": "role:reader and project_id:%(project_id)s",
    "project_member_or_admin": "rule:project_member_api or rule:context_is_admin",
    "project_reader_or_admin": "rule:project_reader_api or rule:context_is_admin",
    **dict.fromkeys((
        "os_compute_api:servers:index", "os_compute_api:servers:detail", "os_compute_api:servers:show",
        "os_compute_api:os-instance-actions:list", "os_compute_api:os-instance-actions:show",
        "os_compute_api:server-metadata:index", "os_compute_api:server-metadata:show",
        "os_compute_api:os-volumes-attachments:index", "os_compute_api:os-volumes-attachments:show",
        "os_compute_api:os-flavor-extra-specs:index", "os_compute_api:os-quota-sets:show",
        "os_compute_api:os-quota-sets:detail", "os_compute_api:os-simple-tenant-usage:show",
        "os_compute_api:os-availability-zone:list", "os_compute_api:os-server-groups:index",
        "os_compute_api:os-networks:list", "os_compute_api:os-networks:view",
        "os_compute_api:os-server-groups:show", "os_compute_api:ips:index", "os_compute_api:ips:show",
        "os_compute_api:os-server-tags:index", "os_compute_api:os-server-tags:show",
    ), _NOVA_READER),
    **dict.fromkeys((
        "os_compute_api:servers:create", "os_compute_api:servers:delete", "os_compute_api:servers:update",
        "os_compute_api:servers:start", "os_compute_api:servers:stop", "os_compute_api:servers:reboot",
        "os_compute_api:servers:resize", "os_compute_api:servers:confirm_resize",
        "os_compute_api:servers:revert_resize", "os_compute_api:servers:rebuild",
        "os_compute_api:servers:create_image", "os_compute_api:os-pause-server:pause",
        "os_compute_api:os-pause-server:unpause", "os_compute_api:os-suspend-server:suspend",
        "os_compute_api:os-suspend-server:resume", "os_compute_api:os-lock-server:lock",
        "os_compute_api:os-lock-server:unlock", "os_compute_api:os-shelve:shelve",
        "os_compute_api:os-shelve:unshelve", "os_compute_api:os-admin-password",
        "os_compute_api:os-deferred-delete:force", "os_compute_api:os-console-output",
        "os_compute_api:server-metadata:create", "os_compute_api:server-metadata:update",
        "os_compute_api:server-metadata:update_all", "os_compute_api:server-metadata:delete",
        "os_compute_api:os-volumes-attachments:create", "os_compute_api:os-volumes-attachments:update",
        "os_compute_api:os-volumes-attachments:delete", "os_compute_api:os-server-groups:create",
        "os_compute_api:os-server-groups:delete", "os_compute_api:servers:trigger_crash_dump",
        "os_compute_api:os-server-tags:update", "os_compute_api:os-server-tags:update_all",
        "os_compute_api:os-server-tags:delete", "os_compute_api:os-server-tags:delete_all",
    ), _NOVA_MEMBER),
    **dict.fromkeys((
        "os_compute_api:servers:index:get_all_tenants", "os_compute_api:servers:detail:get_all_tenants",
        "os_compute_api:os-lock-server:unlock:unlock_override", "os_compute_api:os-shelve:shelve_offload",
        "os_compute_api:os-admin-actions:reset_state", "os_compute_api:os-flavor-manage:create",
        "os_compute_api:os-flavor-manage:delete", "os_compute_api:os-quota-sets:update",
        "os_compute_api:os-simple-tenant-usage:list", "os_compute_api:os-hypervisors:list",
        "os_compute_api:os-hypervisors:list-detail", "os_compute_api:os-hypervisors:show",
        "os_compute_api:limits:other_project", "os_compute_api:os-server-groups:index:all_projects",
        "os_compute_api:os-availability-zone:detail", "os_compute_api:servers:show:host_status",
        # the admin-only list filters (host, and ip6 before 2.5) and OS-EXT-SRV-ATTR:* in a view
        "os_compute_api:servers:allow_all_filters", "os_compute_api:os-extended-server-attributes",
    ), _NOVA_ADMIN),
    **dict.fromkeys(("os_compute_api:limits", "os_compute_api:os-quota-sets:defaults"), _NOVA_ANY),
    **dict.fromkeys((
        "os_compute_api:os-keypairs:index", "os_compute_api:os-keypairs:create",
        "os_compute_api:os-keypairs:show", "os_compute_api:os-keypairs:delete",
    ), _NOVA_OWNER_USER),
}

# -- neutron (neutron/conf/policies) -------------------------------------------------------------
_NEUTRON_ADMIN_OR_MEMBER = "(rule:admin_only) or (role:member and project_id:%(project_id)s)"
_NEUTRON_ADMIN_OR_READER = "(rule:admin_only) or (role:reader and project_id:%(project_id)s)"
_NEUTRON_RULES: dict[str, str] = {
    "context_is_admin": "role:admin",
    "admin_only": "rule:context_is_admin",
    # neutron writes these as field checks on the network; the target carries the flags
    "shared": "'True':%(shared)s",
    "external": "'True':%(router:external)s",
    "create_network": _NEUTRON_ADMIN_OR_MEMBER,
    "create_network:shared": "rule:admin_only",
    "create_network:router:external": "rule:admin_only",
    "update_network": _NEUTRON_ADMIN_OR_MEMBER,
    "update_network:shared": "rule:admin_only",
    "update_network:router:external": "rule:admin_only",
    "delete_network": _NEUTRON_ADMIN_OR_MEMBER,
    "get_network": f"{_NEUTRON_ADMIN_OR_READER} or rule:shared or rule:external",
    # a subnet belongs to the network's owner: neutron checks the member role on the network's project
    "create_subnet": "(rule:admin_only) or (role:member and project_id:%(network:project_id)s)",
    "get_subnet": f"{_NEUTRON_ADMIN_OR_READER} or rule:shared",
    # the subnet's target is its network's: its project is the network's owner
    "update_subnet": _NEUTRON_ADMIN_OR_MEMBER,
    "delete_subnet": _NEUTRON_ADMIN_OR_MEMBER,
    "get_port": _NEUTRON_ADMIN_OR_READER,
    # a port's binding attributes name the compute host: shown to an admin only
    "get_port:binding:host_id": "rule:admin_only",
    "get_floatingip": _NEUTRON_ADMIN_OR_READER,
}

# -- glance (glance/policies) --------------------------------------------------------------------
_GLANCE_RULES: dict[str, str] = {
    "context_is_admin": "role:admin",
    "add_image": "role:admin or (role:member and project_id:%(project_id)s)",
    "get_images": "role:admin or (role:reader and project_id:%(project_id)s)",
    "get_image": (
        "role:admin or (role:reader and (project_id:%(owner)s or 'community':%(visibility)s"
        " or 'public':%(visibility)s or 'shared':%(visibility)s))"
    ),
    "delete_image": "role:admin or (role:member and project_id:%(owner)s)",
    "publicize_image": "role:admin",
    "modify_image": "role:admin or (role:member and project_id:%(project_id)s)",
    "communitize_image": "role:admin or (role:member and project_id:%(project_id)s)",
    "upload_image": "role:admin or (role:member and project_id:%(project_id)s)",
    # glance's default asks a member, not a reader: a reader sees an image but does not get its data
    "download_image": (
        "role:admin or (role:member and (project_id:%(project_id)s or 'community':%(visibility)s"
        " or 'public':%(visibility)s or 'shared':%(visibility)s))"
    ),
}

# -- cinder (cinder/policies) --------------------------------------------------------------------
_CINDER_RULES: dict[str, str] = {
    "context_is_admin": "role:admin",
    "admin_api": "is_admin:True or (role:admin and is_admin_project:True)",
    "project_member": "role:member and project_id:%(project_id)s",
    "project_reader": "role:reader and project_id:%(project_id)s",
    "project_member_or_admin": "rule:project_member or rule:context_is_admin",
    "project_reader_or_admin": "rule:project_reader or rule:context_is_admin",
    "volume:create": "rule:project_member_or_admin",
    "volume:delete": "rule:project_member_or_admin",
    "volume:get": "rule:project_reader_or_admin",
    "volume:get_all": "rule:project_reader_or_admin",
    "volume:update": "rule:project_member_or_admin",
    "volume:update_readonly_flag": "rule:project_member_or_admin",
    "volume:get_volume_metadata": "rule:project_reader_or_admin",
    "volume:create_volume_metadata": "rule:project_member_or_admin",
    "volume:update_volume_metadata": "rule:project_member_or_admin",
    "volume:delete_volume_metadata": "rule:project_member_or_admin",
    # os-vol-tenant-attr:tenant_id in a volume's view
    "volume_extension:volume_tenant_attribute": "rule:admin_api",
    "limits_extension:used_limits": "rule:project_reader_or_admin",
    # cinder's default: any caller may list the zones
    "volume_extension:availability_zone_list": "",
}

# -- keystone (keystone/common/policies) ---------------------------------------------------------
_KEYSTONE_ADMIN = "rule:admin_required"
_KEYSTONE_RULES: dict[str, str] = {
    "admin_required": "role:admin or is_admin:1",
    "token_subject": "user_id:%(target.token.user_id)s",
    "identity:validate_token": "rule:admin_required or rule:token_subject",
    "identity:check_token": "rule:admin_required or rule:token_subject",
    "identity:revoke_token": "rule:admin_required or rule:token_subject",
    "identity:get_project": "rule:admin_required or project_id:%(target.project.id)s",
    "identity:list_user_projects": "rule:admin_required or user_id:%(target.user.id)s",
    "identity:get_user": "rule:admin_required or user_id:%(target.user.id)s",
    "identity:list_role_assignments": "rule:admin_required or user_id:%(target.user.id)s",
    # a domain reader lists its domain's projects; this cloud issues project-scoped tokens only, so
    # the second half never holds by default (an operator's file may widen it)
    "identity:list_projects": "rule:admin_required or (role:reader and domain_id:%(target.domain_id)s)",
    "identity:get_domain": "rule:admin_required or project_domain_id:%(target.domain.id)s",
    **dict.fromkeys((
        "identity:create_project", "identity:update_project", "identity:delete_project",
        "identity:list_users", "identity:create_user", "identity:update_user", "identity:delete_user",
        "identity:create_grant", "identity:revoke_grant", "identity:list_domains",
    ), _KEYSTONE_ADMIN),
}

# the rule each service computes its request context's is_admin from (nova, neutron, glance and
# cinder's context_is_admin; keystone has none and checks admin_required): what decides whether a
# caller sees every project's resources, beyond the rule of the route
ADMIN_RULES: dict[str, str] = {
    "nova": "context_is_admin", "neutron": "context_is_admin", "glance": "context_is_admin",
    "cinder": "context_is_admin", "keystone": "admin_required",
}

# the file name an operator's overrides go in, per service (as devstack names them)
SERVICES: dict[str, Mapping[str, str]] = {
    "nova": _NOVA_RULES,
    "neutron": _NEUTRON_RULES,
    "glance": _GLANCE_RULES,
    "cinder": _CINDER_RULES,
    "keystone": _KEYSTONE_RULES,
}


def default_rules(service: str) -> list[oslo.RuleDefault]:
    """The RuleDefaults `service` registers (also what `oslopolicy-sample-generator` would print)."""
    return [oslo.RuleDefault(name, check) for name, check in SERVICES[service].items()]


def credentials(user_id: str, project_id: str, roles: Iterable[str], is_admin: bool | None = None
                ) -> dict[str, Any]:
    """The credentials oslo.policy checks, from a project-scoped token: every role the assigned
    ones imply (keystone puts implied roles in the token too) and is_admin, which each service
    sets from its own context_is_admin rule (PolicyEnforcers.admin_services; without it, the
    admin role)."""
    granted = sorted(effective_roles(roles))
    return {
        "user_id": user_id,
        "project_id": project_id,
        "project_domain_id": "default",
        "roles": granted,
        "is_admin": ADMIN in granted if is_admin is None else is_admin,
        # one cloud-wide admin project, as cinder's is_admin_project is without admin_project_name
        "is_admin_project": True,
    }


# a policy file's modification time (ns), size and inode; None while there is no file
_Stamp = tuple[int, int, int] | None
# decisions kept per service before they are all forgotten: a cloud's callers hold a few roles and
# projects each, so a busy API asks far fewer distinct questions than this
_DECISIONS_KEPT = 20_000


def _stamp(path: str) -> _Stamp:
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size, found.st_ino


def _frozen(values: Mapping[str, Any]) -> Hashable:
    """`values` as a key: its items in order, lists (the roles) as tuples."""
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in values.items()))


class PolicyEnforcers:
    """One oslo.policy Enforcer per service, reading `<dir>/<service>-policy.yaml` when present."""

    def __init__(self, policy_dir: Path | None = None) -> None:
        self.policy_dir = policy_dir
        # each service's policy file, once: allows() stats it on every check
        self._files = {service: self._policy_file(service) for service in SERVICES}
        self._enforcers = {service: self._enforcer(service) for service in SERVICES}
        # per service: the policy file's stamp when its rules were last loaded, and the decisions
        # made since (see allows)
        self._decisions: dict[str, tuple[_Stamp, dict[Hashable, bool]]] = {}

    def _enforcer(self, service: str) -> oslo.Enforcer:
        # a private ConfigOpts per service: nothing is read from the command line or /etc
        conf = cfg.ConfigOpts()
        conf([], project=service, default_config_files=[], default_config_dirs=[])
        # an absolute path, so oslo.policy never searches /etc/<service> for a file; no directory:
        # the defaults alone (the empty file)
        enforcer = oslo.Enforcer(conf, policy_file=self._files[service])
        # nor a policy.d found in /etc/<service>: overrides come from the cloud's policy directory only
        conf.set_override("policy_dirs", [], group="oslo_policy")
        enforcer.register_defaults(default_rules(service))
        return enforcer

    def _policy_file(self, service: str) -> str:
        if self.policy_dir is None:
            return os.devnull
        return str(self.policy_dir.absolute() / f"{service}-policy.yaml")

    def allows(self, service: str, rule: str, target: Mapping[str, Any], creds: Mapping[str, Any]) -> bool:
        """Whether `service`'s policy lets `creds` do `rule` on `target`; an unregistered rule
        name is a programming error (oslo.policy's PolicyNotRegistered), never a silent allow.

        A check is a pure function of the rules, the target and the credentials, so its answer is
        kept until the policy file changes. oslo.policy re-reads the file's time and walks every
        registered rule on each check, and looks the file up again on each one while it is
        missing: about a millisecond of every request. Here the file is stat'ed once a check (its
        time, size and inode: an edit in the same second counts too) and the rules are reloaded,
        and the answers forgotten, when that changes; an edit applies at the next request, as
        with oslo.policy alone."""
        enforcer = self._enforcers[service]
        decisions = self._current(service, enforcer)
        try:
            key = (rule, _frozen(target), _frozen(creds))
            hit = decisions.get(key)
        except TypeError:  # a value that cannot be a key (a nested dict): asked every time
            return bool(enforcer.authorize(rule, dict(target), dict(creds)))
        if hit is None:
            hit = bool(enforcer.authorize(rule, dict(target), dict(creds)))
            if len(decisions) >= _DECISIONS_KEPT:
                decisions.clear()
            decisions[key] = hit
        return hit

    def _current(self, service: str, enforcer: oslo.Enforcer) -> dict[Hashable, bool]:
        """The decisions made under the rules the policy file holds now; reloaded when it changed."""
        stamp = _stamp(self._files[service])
        known = self._decisions.get(service)
        if known is None or known[0] != stamp:
            enforcer.load_rules(force_reload=known is not None)
            known = self._decisions[service] = (stamp, {})
        return known[1]

    def admin_of(self, user_id: str, project_id: str, roles: Iterable[str], service: str) -> bool:
        """Whether the caller meets `service`'s admin rule (ADMIN_RULES): its request context is
        then an admin's, which sees and acts on every project's resources, as each service's
        RequestContext sets is_admin from its policy."""
        creds = credentials(user_id, project_id, roles, is_admin=False)
        return self.allows(service, ADMIN_RULES[service], {}, creds)


def denial_message(service: str, rule: str) -> str:
    """The 403 message each service writes for a rule its policy refused."""
    if service == "neutron":
        return f"(rule:{rule}) is disallowed by policy"
    if service == "glance":
        return f"You are not authorized to complete {rule} action."
    if service == "keystone":
        return f"You are not authorized to perform the requested action: {rule}."
    return f"Policy doesn't allow {rule} to be performed."
