"""Policy for every route in one place: a table route → (service, rule, target), checked by one
dependency the app installs on every route, with the 403 of the route's service.

The rules are each service's own (eventsvm.identity.policy_rules, oslo.policy). The target is what
the rule is checked against, as the services build it: the caller's project for a create or a
list, the owning project of a server, image or network named in the path, the project in a cinder
or quota path. A resource the caller cannot see is not checked here: the handler answers the
service's 404, as nova looks an instance up before it checks policy (the handlers find resources
through the same visibility checks, eventsvm.api.compute.visible_server and the like). A route
missing from the table is refused: a new route needs a rule (tests/unit/test_api_policy.py walks
every route and fails on one without).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request

from eventsvm.api.auth import Identity, api_context, caller_of, token_header
from eventsvm.api.compute_catalog import keypair_owner
from eventsvm.api.context import ApiContext
from eventsvm.api.errors import Forbidden
from eventsvm.api.image import visible_image
from eventsvm.api.policy_check import Target, authorize, own_target
from eventsvm.api.server_request import network_visible
from eventsvm.identity.tokens import TokenInvalid

log = logging.getLogger(__name__)

Resolver = Callable[[ApiContext, Identity, Request], "Target | None"]


@dataclass(frozen=True, slots=True)
class RouteRule:
    """The policy of one route. `rule` None: any valid token (the service has no policy for it);
    `public`: no token at all (version documents, token issue)."""

    service: str = ""
    rule: str | None = None
    target: str = "own"
    public: bool = False


PUBLIC = RouteRule(public=True)
ANY_TOKEN = RouteRule()


def _nova(rule: str, target: str = "own") -> RouteRule:
    return RouteRule("nova", f"os_compute_api:{rule}", target)


def _neutron(rule: str, target: str = "own") -> RouteRule:
    return RouteRule("neutron", rule, target)


def _glance(rule: str, target: str = "own") -> RouteRule:
    return RouteRule("glance", rule, target)


def _cinder(rule: str) -> RouteRule:
    return RouteRule("cinder", rule, "path_project")


def _keystone(rule: str, target: str = "own") -> RouteRule:
    return RouteRule("keystone", f"identity:{rule}", target)


_S = "/compute/v2.1/servers/{server_id}"
_GRANT = "/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"
_QUOTA = "/compute/v2.1/os-quota-sets/{project_id}"
_CINDER = "/volume/v3/{project_id}"

# (method, route path) → its rule. The server action route takes its rule from the action's name.
ROUTE_RULES: dict[tuple[str, str], RouteRule] = {
    **{("GET", path): PUBLIC for path in (
        "/identity/", "/identity", "/identity/v3/", "/identity/v3", "/compute/", "/compute",
        "/compute/v2/", "/compute/v2", "/compute/v2.1/", "/compute/v2.1", "/image/", "/image",
        "/network/", "/network", "/network/v2.0/", "/network/v2.0", "/volume/", "/volume",
        "/volume/v3/", "/volume/v3",
    )},
    # -- monitoring (mounted beside the API by `eventsvm up`): open to a scraper and a browser; what
    # they show is their own rule (counts only, names and reasons for an admin's token; item 8)
    **{("GET", path): PUBLIC for path in ("/metrics", "/dashboard", "/dashboard/state")},
    # -- keystone
    ("POST", "/identity/v3/auth/tokens"): PUBLIC,
    ("GET", "/identity/v3/auth/catalog"): ANY_TOKEN,
    ("GET", "/identity/v3/auth/tokens"): _keystone("validate_token", "subject_token"),
    ("HEAD", "/identity/v3/auth/tokens"): _keystone("check_token", "subject_token"),
    ("DELETE", "/identity/v3/auth/tokens"): _keystone("revoke_token", "subject_token"),
    # every project: keystone's list_projects (an admin's); a user's own are /v3/auth/projects
    ("GET", "/identity/v3/projects"): _keystone("list_projects"),
    ("GET", "/identity/v3/auth/projects"): ANY_TOKEN,
    ("GET", "/identity/v3/users/{user_id}/projects"): _keystone("list_user_projects", "path_user"),
    ("GET", "/identity/v3/projects/{project_id}"): _keystone("get_project", "path_project_keystone"),
    ("POST", "/identity/v3/projects"): _keystone("create_project"),
    ("PATCH", "/identity/v3/projects/{project_id}"): _keystone("update_project"),
    ("DELETE", "/identity/v3/projects/{project_id}"): _keystone("delete_project"),
    ("GET", "/identity/v3/users"): _keystone("list_users"),
    ("GET", "/identity/v3/users/{user_id}"): _keystone("get_user", "path_user"),
    ("POST", "/identity/v3/users"): _keystone("create_user"),
    ("PATCH", "/identity/v3/users/{user_id}"): _keystone("update_user"),
    ("DELETE", "/identity/v3/users/{user_id}"): _keystone("delete_user"),
    # keystone lets anyone with a token read the role list
    ("GET", "/identity/v3/roles"): ANY_TOKEN,
    ("GET", "/identity/v3/roles/{role_id}"): ANY_TOKEN,
    ("PUT", _GRANT): _keystone("create_grant"),
    ("DELETE", _GRANT): _keystone("revoke_grant"),
    ("GET", "/identity/v3/role_assignments"): _keystone("list_role_assignments", "query_user"),
    ("GET", "/identity/v3/domains"): _keystone("list_domains"),
    ("GET", "/identity/v3/domains/{domain_id}"): _keystone("get_domain", "path_domain"),
    # -- nova
    ("POST", "/compute/v2.1/servers"): _nova("servers:create"),
    ("GET", "/compute/v2.1/servers"): _nova("servers:index"),
    ("GET", "/compute/v2.1/servers/detail"): _nova("servers:detail"),
    ("GET", _S): _nova("servers:show", "server"),
    ("PUT", _S): _nova("servers:update", "server"),
    ("DELETE", _S): _nova("servers:delete", "server"),
    ("GET", f"{_S}/os-instance-actions"): _nova("os-instance-actions:list", "server"),
    ("GET", f"{_S}/os-instance-actions/{{action_request_id}}"): _nova("os-instance-actions:show", "server"),
    ("POST", f"{_S}/action"): RouteRule("nova", None, "server"),  # by action: ACTION_RULES
    ("GET", f"{_S}/metadata"): _nova("server-metadata:index", "server"),
    ("POST", f"{_S}/metadata"): _nova("server-metadata:update", "server"),
    ("PUT", f"{_S}/metadata"): _nova("server-metadata:update_all", "server"),
    ("GET", f"{_S}/metadata/{{key}}"): _nova("server-metadata:show", "server"),
    ("PUT", f"{_S}/metadata/{{key}}"): _nova("server-metadata:create", "server"),
    ("DELETE", f"{_S}/metadata/{{key}}"): _nova("server-metadata:delete", "server"),
    ("GET", f"{_S}/tags"): _nova("os-server-tags:index", "server"),
    ("PUT", f"{_S}/tags"): _nova("os-server-tags:update_all", "server"),
    ("DELETE", f"{_S}/tags"): _nova("os-server-tags:delete_all", "server"),
    ("GET", f"{_S}/tags/{{tag}}"): _nova("os-server-tags:show", "server"),
    ("PUT", f"{_S}/tags/{{tag}}"): _nova("os-server-tags:update", "server"),
    ("DELETE", f"{_S}/tags/{{tag}}"): _nova("os-server-tags:delete", "server"),
    ("GET", f"{_S}/os-volume_attachments"): _nova("os-volumes-attachments:index", "server"),
    ("GET", f"{_S}/os-volume_attachments/{{volume_id}}"): _nova("os-volumes-attachments:show", "server"),
    ("POST", f"{_S}/os-volume_attachments"): _nova("os-volumes-attachments:create", "server"),
    ("DELETE", f"{_S}/os-volume_attachments/{{volume_id}}"): _nova("os-volumes-attachments:delete", "server"),
    # nova has no policy on reading flavors: any token
    ("GET", "/compute/v2.1/flavors"): ANY_TOKEN,
    ("GET", "/compute/v2.1/flavors/detail"): ANY_TOKEN,
    ("GET", "/compute/v2.1/flavors/{flavor_id}"): ANY_TOKEN,
    ("GET", "/compute/v2.1/flavors/{flavor_id}/os-extra_specs"): _nova("os-flavor-extra-specs:index"),
    ("POST", "/compute/v2.1/flavors"): _nova("os-flavor-manage:create"),
    ("DELETE", "/compute/v2.1/flavors/{flavor_id}"): _nova("os-flavor-manage:delete"),
    # key pairs belong to a user, not a project: nova lets any role manage its own
    # from 2.10 an admin names another user in the query (a create's body: the handler checks it)
    ("GET", "/compute/v2.1/os-keypairs"): _nova("os-keypairs:index", "keypair_user"),
    ("POST", "/compute/v2.1/os-keypairs"): _nova("os-keypairs:create"),
    ("GET", "/compute/v2.1/os-keypairs/{name}"): _nova("os-keypairs:show", "keypair_user"),
    ("DELETE", "/compute/v2.1/os-keypairs/{name}"): _nova("os-keypairs:delete", "keypair_user"),
    ("GET", "/compute/v2.1/limits"): _nova("limits"),
    ("GET", _QUOTA): _nova("os-quota-sets:show", "path_project"),
    ("GET", f"{_QUOTA}/defaults"): _nova("os-quota-sets:defaults", "path_project"),
    ("GET", f"{_QUOTA}/detail"): _nova("os-quota-sets:detail", "path_project"),
    ("PUT", _QUOTA): _nova("os-quota-sets:update", "path_project"),
    ("GET", "/compute/v2.1/os-simple-tenant-usage"): _nova("os-simple-tenant-usage:list"),
    ("GET", "/compute/v2.1/os-simple-tenant-usage/{tenant_id}"): _nova(
        "os-simple-tenant-usage:show", "path_tenant"),
    ("GET", "/compute/v2.1/os-hypervisors"): _nova("os-hypervisors:list"),
    ("GET", "/compute/v2.1/os-hypervisors/detail"): _nova("os-hypervisors:list-detail"),
    ("GET", "/compute/v2.1/os-hypervisors/{hypervisor_id}"): _nova("os-hypervisors:show"),
    ("GET", "/compute/v2.1/os-availability-zone"): _nova("os-availability-zone:list"),
    ("GET", "/compute/v2.1/os-availability-zone/detail"): _nova("os-availability-zone:detail"),
    # nova's proxy to neutron: its rule is nova's; which networks it shows is neutron's visibility
    ("GET", "/compute/v2.1/os-networks"): _nova("os-networks:list"),
    # nova checks its proxy against the caller's own project, not the network's owner: a shared
    # network another project owns is shown, one the caller may not see is the handler's 404
    ("GET", "/compute/v2.1/os-networks/{network_id}"): _nova("os-networks:view"),
    ("GET", "/compute/v2.1/os-server-groups"): _nova("os-server-groups:index"),
    ("POST", "/compute/v2.1/os-server-groups"): _nova("os-server-groups:create"),
    ("GET", "/compute/v2.1/os-server-groups/{group_id}"): _nova("os-server-groups:show", "server_group"),
    ("DELETE", "/compute/v2.1/os-server-groups/{group_id}"): _nova("os-server-groups:delete", "server_group"),
    ("GET", f"{_S}/ips"): _nova("ips:index", "server"),
    ("GET", f"{_S}/ips/{{network_label}}"): _nova("ips:show", "server"),
    # nova's image proxy has no policy of its own; glance's applies
    ("GET", "/compute/v2.1/images"): _glance("get_images"),
    ("GET", "/compute/v2.1/images/detail"): _glance("get_images"),
    ("GET", "/compute/v2.1/images/{image_id}"): _glance("get_image", "image"),
    ("DELETE", "/compute/v2.1/images/{image_id}"): _glance("delete_image", "image"),
    # -- glance
    ("GET", "/image/v2/images"): _glance("get_images"),
    ("GET", "/image/v2/images/{image_id}"): _glance("get_image", "image"),
    ("POST", "/image/v2/images"): _glance("add_image"),
    ("DELETE", "/image/v2/images/{image_id}"): _glance("delete_image", "image"),
    ("PATCH", "/image/v2/images/{image_id}"): _glance("modify_image", "image"),
    ("PUT", "/image/v2/images/{image_id}/tags/{tag}"): _glance("modify_image", "image"),
    ("DELETE", "/image/v2/images/{image_id}/tags/{tag}"): _glance("modify_image", "image"),
    ("PUT", "/image/v2/images/{image_id}/file"): _glance("upload_image", "image"),
    ("GET", "/image/v2/images/{image_id}/file"): _glance("download_image", "image"),
    # an image path with an empty id: the rule checked against the caller's own project, then a 404
    ("GET", "/image/v2/images/"): _glance("get_image"),
    ("DELETE", "/image/v2/images/"): _glance("delete_image"),
    # -- neutron
    ("GET", "/network/v2.0/networks"): _neutron("get_network"),
    ("GET", "/network/v2.0/networks/{network_id}"): _neutron("get_network", "network"),
    ("POST", "/network/v2.0/networks"): _neutron("create_network"),
    ("PUT", "/network/v2.0/networks/{network_id}"): _neutron("update_network", "network"),
    ("DELETE", "/network/v2.0/networks/{network_id}"): _neutron("delete_network", "network"),
    ("PUT", "/network/v2.0/subnets/{subnet_id}"): _neutron("update_subnet", "subnet"),
    ("DELETE", "/network/v2.0/subnets/{subnet_id}"): _neutron("delete_subnet", "subnet"),
    ("GET", "/network/v2.0/subnets"): _neutron("get_subnet"),
    ("GET", "/network/v2.0/subnets/{subnet_id}"): _neutron("get_subnet", "subnet"),
    # the network's owner is checked by the handler, which reads the body (network_subnet_target)
    ("POST", "/network/v2.0/subnets"): _neutron("create_subnet", "own_network"),
    ("GET", "/network/v2.0/extensions"): ANY_TOKEN,
    ("GET", "/network/v2.0/extensions/{alias}"): ANY_TOKEN,
    ("GET", "/network/v2.0/floatingips"): _neutron("get_floatingip"),
    ("GET", "/network/v2.0/ports"): _neutron("get_port"),
    ("GET", "/network/v2.0/ports/{port_id}"): _neutron("get_port"),
    # -- cinder
    ("GET", f"{_CINDER}/volumes"): _cinder("volume:get_all"),
    ("GET", f"{_CINDER}/volumes/detail"): _cinder("volume:get_all"),
    ("GET", f"{_CINDER}/volumes/{{volume_id}}"): _cinder("volume:get"),
    ("POST", f"{_CINDER}/volumes"): _cinder("volume:create"),
    ("DELETE", f"{_CINDER}/volumes/{{volume_id}}"): _cinder("volume:delete"),
    ("PUT", f"{_CINDER}/volumes/{{volume_id}}"): _cinder("volume:update"),
    # by action: VOLUME_ACTION_RULES
    ("POST", f"{_CINDER}/volumes/{{volume_id}}/action"): RouteRule("cinder", None, "path_project"),
    ("GET", f"{_CINDER}/volumes/{{volume_id}}/metadata"): _cinder("volume:get_volume_metadata"),
    ("POST", f"{_CINDER}/volumes/{{volume_id}}/metadata"): _cinder("volume:create_volume_metadata"),
    ("PUT", f"{_CINDER}/volumes/{{volume_id}}/metadata"): _cinder("volume:update_volume_metadata"),
    ("GET", f"{_CINDER}/volumes/{{volume_id}}/metadata/{{key}}"): _cinder("volume:get_volume_metadata"),
    ("PUT", f"{_CINDER}/volumes/{{volume_id}}/metadata/{{key}}"): _cinder("volume:update_volume_metadata"),
    ("DELETE", f"{_CINDER}/volumes/{{volume_id}}/metadata/{{key}}"): _cinder("volume:delete_volume_metadata"),
    # a volume path with an empty id: checked as the volume's own rule would be, then cinder's 404
    ("GET", f"{_CINDER}/volumes/"): _cinder("volume:get"),
    ("PUT", f"{_CINDER}/volumes/"): _cinder("volume:update"),
    ("DELETE", f"{_CINDER}/volumes/"): _cinder("volume:delete"),
    ("GET", f"{_CINDER}/limits"): _cinder("limits_extension:used_limits"),
    ("GET", f"{_CINDER}/os-availability-zone"): _cinder("volume_extension:availability_zone_list"),
    ("GET", f"{_CINDER}/extensions"): ANY_TOKEN,
}

# POST /servers/{id}/action: nova's rule for each action a body may name
ACTION_RULES: dict[str, str] = {
    "os-start": "servers:start", "os-stop": "servers:stop", "reboot": "servers:reboot",
    "pause": "os-pause-server:pause", "unpause": "os-pause-server:unpause",
    "suspend": "os-suspend-server:suspend", "resume": "os-suspend-server:resume",
    "lock": "os-lock-server:lock", "unlock": "os-lock-server:unlock",
    "createImage": "servers:create_image", "resize": "servers:resize",
    "confirmResize": "servers:confirm_resize", "revertResize": "servers:revert_resize",
    "rebuild": "servers:rebuild", "shelve": "os-shelve:shelve", "unshelve": "os-shelve:unshelve",
    "shelveOffload": "os-shelve:shelve_offload", "os-resetState": "os-admin-actions:reset_state",
    "forceDelete": "os-deferred-delete:force", "changePassword": "os-admin-password",
    "os-getConsoleOutput": "os-console-output", "trigger_crash_dump": "servers:trigger_crash_dump",
}
# cinder's rule for each volume action served (set_bootable is a volume update there)
VOLUME_ACTION_RULES: dict[str, str] = {
    "os-update_readonly_flag": "volume:update_readonly_flag", "os-set_bootable": "volume:update",
}
# an action these tables do not know still needs a member of the resource's project: a reader
# never reaches a handler that changes something
UNKNOWN_ACTION_RULE = "project_member_or_admin"
# the routes whose rule is the action's, named by the body's one key
_BY_ACTION = {"nova": (ACTION_RULES, "os_compute_api:"), "cinder": (VOLUME_ACTION_RULES, "")}


# -- targets of resources named in the path: None when it is not there or not visible -----------
def _server(ctx: ApiContext, caller: Identity, request: Request) -> Target | None:
    inst = ctx.readmodel.models.instances.get(request.path_params.get("server_id", ""))
    if inst is None or inst.project_id is None:
        return None
    if not caller.sees("nova", inst.project_id):
        return None  # nova's 404: another project's server does not exist for this caller
    return {"project_id": inst.project_id, "user_id": inst.user_id}


def _server_group(ctx: ApiContext, _caller: Identity, request: Request) -> Target | None:
    # nova finds a group of any project, then checks the policy on its owner: another project's
    # group is a 403, an unknown one the handler's 404
    group = ctx.readmodel.models.catalog.server_groups.get(request.path_params.get("group_id", ""))
    if group is None:
        return None
    return {"project_id": group.get("project_id"), "user_id": group.get("user_id")}


def _image(ctx: ApiContext, caller: Identity, request: Request) -> Target | None:
    image = visible_image(ctx.readmodel.models.catalog, caller, request.path_params.get("image_id", ""))
    if image is None:
        return None
    owner = image.get("owner")
    return {"project_id": owner, "owner": owner, "visibility": image.get("visibility", "public")}


def network_target(network: Mapping[str, Any]) -> Target:
    """Neutron's target for a network: its project and its shared / external flags."""
    owner = network.get("owner")
    return {"project_id": owner, "tenant_id": owner, "shared": bool(network.get("shared")),
            "router:external": bool(network.get("external"))}


def _network(ctx: ApiContext, caller: Identity, request: Request) -> Target | None:
    network = ctx.readmodel.models.catalog.networks.get(request.path_params.get("network_id", ""))
    if network is None or not network_visible(network, caller):
        return None
    return network_target(network)


def _subnet(ctx: ApiContext, caller: Identity, request: Request) -> Target | None:
    catalog = ctx.readmodel.models.catalog
    subnet = catalog.subnets.get(request.path_params.get("subnet_id", ""))
    network = catalog.networks.get(subnet["network_id"]) if subnet is not None else None
    if network is None or not network_visible(network, caller):
        return None
    return network_target(network)


def network_subnet_target(caller: Identity, network: Mapping[str, Any]) -> Target:
    """create_subnet's target: the caller's project, and the owner of the network it goes on."""
    return {**own_target(caller), "network:project_id": network.get("owner")}


def _path(name: str, key: str) -> Resolver:
    """The target a path parameter names, e.g. cinder's {project_id}."""
    def resolve(_ctx: ApiContext, _caller: Identity, request: Request) -> Target | None:
        return {key: request.path_params.get(name, "")}
    return resolve


def _query_user(_ctx: ApiContext, caller: Identity, request: Request) -> Target:
    # keystone's list_role_assignments filtered to one user (the CLI's `--user`); without a filter
    # it lists everyone's, which is the admin's
    return {"target.user.id": request.query_params.get("user.id")}


def _subject_token(ctx: ApiContext, caller: Identity, request: Request) -> Target | None:
    subject = request.headers.get("X-Subject-Token")
    if not subject:
        return None
    try:
        claims = ctx.tokens.validate(subject)
    except TokenInvalid:
        return None  # keystone's 404 for a token that is not valid, from the handler
    return {"target.token.user_id": claims.user_id}


def _keypair_user(_ctx: ApiContext, caller: Identity, request: Request) -> Target:
    return {"user_id": keypair_owner(request, caller)}


_RESOLVERS: dict[str, Resolver] = {
    "server": _server,
    "server_group": _server_group,
    "keypair_user": _keypair_user,
    "image": _image,
    "network": _network,
    "subnet": _subnet,
    "path_project": _path("project_id", "project_id"),
    "path_tenant": _path("tenant_id", "project_id"),
    "path_project_keystone": _path("project_id", "target.project.id"),
    "path_user": _path("user_id", "target.user.id"),
    "path_domain": _path("domain_id", "target.domain.id"),
    "query_user": _query_user,
    "subject_token": _subject_token,
}


def _target(ctx: ApiContext, caller: Identity, request: Request, kind: str) -> Target | None:
    """The route's target; None when the resource named in the path is not there or not the
    caller's to see: the handler then answers the service's 404, as nova looks an instance up
    before it checks policy (so a project's outsiders learn nothing, not even a 403)."""
    resolver = _RESOLVERS.get(kind)
    if resolver is None:  # "own" and "own_network"
        return own_target(caller)
    with ctx.readmodel.lock:
        found = resolver(ctx, caller, request)
    return None if found is None else {**own_target(caller), **found}


async def _action_rule(request: Request, service: str) -> str:
    rules, prefix = _BY_ACTION[service]
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError:
        body = None
    if isinstance(body, dict) and len(body) == 1:
        action = next(iter(body))
        if action in rules:
            return f"{prefix}{rules[action]}"
    return UNKNOWN_ACTION_RULE


def policy_may_refuse(method: str, path: str) -> bool:
    """Whether enforce_route_policy can answer 403 on the route: a rule is checked there (the
    server action route's comes from the action), or the table has no line for it at all."""
    entry = ROUTE_RULES.get((method, path))
    if entry is None:
        return True
    return not entry.public and (entry.rule is not None or entry.service in _BY_ACTION)


def rule_of(request: Request) -> RouteRule | None:
    """The table's rule for the route the request matched."""
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return ROUTE_RULES.get((request.method, path)) if path is not None else None


async def enforce_route_policy(
    request: Request, token: str | None = Depends(token_header), ctx: ApiContext = Depends(api_context)
) -> None:
    """The dependency every route runs first: the caller's token, then the route's rule."""
    entry = rule_of(request)
    if entry is not None and entry.public:
        return
    caller = caller_of(request, ctx, token)  # 401 before any 403, as the services answer
    if entry is None:
        log.error("no policy rule for %s %s: refused", request.method, request.url.path)
        raise Forbidden("No policy rule covers this request; it is refused.")
    rule = entry.rule
    if entry.service in _BY_ACTION and rule is None:
        rule = await _action_rule(request, entry.service)
    if rule is None:
        return
    target = _target(ctx, caller, request, entry.target)
    if target is not None:
        authorize(ctx, caller, entry.service, rule, target)
