"""The conformance run's Python half (`make interop`, driven by scripts/interop.sh).

  interop.py provision URL WORKSPACE [--validation]
                                       create tempest's accounts, write accounts.yaml + tempest.conf
                                       (--validation: tempest SSHes into the guests, for a cloud on
                                       real QEMU)
  interop.py select  WORKSPACE [--validation]
                                       write the include list: every test id of the interop guideline
                                       (--validation: only those that need run_validation)
  interop.py judge   WORKSPACE [--also WORKSPACE2] [--update]
                                       compare the run (merged with WORKSPACE2's: a test passes when
                                       it passed in either) with interop/passing.txt: a test that
                                       passed before and fails now is a regression (exit 1);
                                       --update rewrites the list from this run

Runs in the project's venv (openstacksdk talks to the cloud as its admin); tempest runs in its own.
Tempest gets pre-provisioned accounts: one project and member user per concurrent test worker and
the alternate user tempest asks for, created through the public API like any operator would. Its
dynamic credentials work too (a project and users made per test class and deleted afterwards,
with `create_isolated_networks = false`: this cloud has no neutron routers to isolate networks
with); the fixed accounts keep the run's projects the same from one run to the next.
"""

from __future__ import annotations

import argparse
import csv
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import openstack

ROOT = Path(__file__).resolve().parent.parent
GUIDELINE = ROOT / "interop" / "interop-2020.06-compute.tsv"
PASSING = ROOT / "interop" / "passing.txt"
# projects for tempest's accounts: the last ADMINS of them hold an admin each, the rest a member
# and a reader
PROJECTS = 9
ADMINS = 3
# the guideline's tests that tempest skips unless it may SSH into the guest ([validation]
# run_validation): they run a second time against a cloud on real QEMU, whose guests are reachable
VALIDATION_TESTS = (
    "tempest.api.compute.servers.test_create_server.ServersTestJSON.test_host_name_is_same_as_server_name",
    "tempest.api.compute.servers.test_create_server.ServersTestJSON.test_verify_created_server_vcpus",
)


def guideline_tests() -> list[str]:
    """The tempest test ids the 2020.06 "OpenStack Powered Compute" guideline requires."""
    rows = GUIDELINE.read_text().splitlines()
    return [line.split("\t")[1] for line in rows if line and not line.startswith("#")]


def provision(url: str, workspace: Path, validation: bool = False) -> None:
    """Accounts and tempest.conf for the cloud at URL, whose admin password is in the environment."""
    admin_password = os.environ["EVENTSVM_ADMIN_PASSWORD"]
    cloud = openstack.connect(
        auth_url=f"{url}/identity/v3",
        username="admin",
        password=admin_password,
        project_name="admin",
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
    )
    roles = {name: cloud.identity.find_role(name) for name in ("admin", "member", "reader")}
    accounts = [{"username": "admin", "project_name": "admin", "password": admin_password,
                 "roles": ["admin"], "types": ["admin"]}]
    # tempest locks an account for a whole test class and asks for a project's member, its reader
    # (same project, another user), an alternate and an admin: one of each per worker, and spares
    for n in range(1, PROJECTS + 1):
        project = cloud.identity.create_project(name=f"tempest-{n}", domain_id="default")
        for persona in ("member", "reader") if n <= PROJECTS - ADMINS else ("admin",):
            password = secrets.token_urlsafe(12)
            user = cloud.identity.create_user(name=f"tempest-{n}-{persona}", password=password,
                                              domain_id="default", default_project_id=project.id)
            cloud.identity.assign_project_role_to_user(project, user, roles[persona])
            account: dict[str, object] = {"username": user.name, "project_name": project.name,
                                          "password": password, "roles": [persona]}
            if persona == "admin":
                account["types"] = ["admin"]
            accounts.append(account)
    # tempest's alternate credentials are the first free non-admin account in this file's order:
    # with each project's reader right after its member, the alternate of tempest-1-member was
    # tempest-1-reader, in the primary's own project, and tests that need the alternate's project
    # to be another (test_list_projects_returns_only_authorized_projects) failed by luck of order
    accounts.sort(key=lambda account: account["roles"] == ["reader"])
    images = [image for image in cloud.image.images() if image.status == "active"]
    if not images:  # the seed registers cirros; without it no server test can run
        sys.exit("interop.py: the cloud has no active image to boot")
    image_alt = _second_image(cloud, url, images[0])
    network = _shared_network(cloud)
    # the seed's external network (tempest's test_external_network_visibility looks it up)
    public = cloud.network.find_network("public", ignore_missing=False)
    etc = workspace / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "accounts.yaml").write_text(_accounts_yaml(accounts))
    (etc / "tempest.conf").write_text(
        _tempest_conf(url, etc / "accounts.yaml", images[0].id, image_alt, network, public.id,
                      admin_password, validation))


def _second_image(cloud: openstack.connection.Connection, url: str, image: Any) -> str:
    """A second public image, distinct from the first (tempest's image_ref_alt: the list-by-image
    tests need servers of two images): a small raw disk, uploaded, as nova boots only an active
    image; the test hypervisor boots either."""
    body = {"name": f"{image.name}-alt", "disk_format": "raw", "container_format": "bare",
            "visibility": "public"}
    image_id = str(cloud.session.post(f"{url}/image/v2/images", json=body).json()["id"])
    cloud.session.put(f"{url}/image/v2/images/{image_id}/file", data=bytes(1 << 20),
                      headers={"Content-Type": "application/octet-stream"})
    return image_id


def _shared_network(cloud: openstack.connection.Connection) -> str:
    """A network every tempest project may boot on (tempest's fixed_network_name): the seed's
    `private` belongs to the demo project, and the list-by-IP tests need each server's address on
    a network tempest names."""
    network = cloud.network.create_network(name="tempest-shared", shared=True)
    cloud.network.create_subnet(network_id=network.id, name="tempest-shared-subnet", ip_version=4,
                                cidr="10.100.0.0/22", gateway_ip="10.100.0.1")
    return str(network.name)


def _accounts_yaml(accounts: list[dict[str, object]]) -> str:
    """tempest's pre-provisioned accounts file; YAML written by hand to keep PyYAML out of the deps."""
    lines = []
    for account in accounts:
        lines.append(f"- username: '{account['username']}'")
        lines.append(f"  project_name: '{account['project_name']}'")
        lines.append(f"  password: '{account['password']}'")
        lines.append("  user_domain_name: 'Default'")
        lines.append("  project_domain_name: 'Default'")
        for key in ("roles", "types"):
            if key in account:
                values = ", ".join(f"'{value}'" for value in account[key])  # type: ignore[attr-defined]
                lines.append(f"  {key}: [{values}]")
    return "\n".join(lines) + "\n"


def _tempest_conf(url: str, accounts: Path, image_id: str, image_alt: str, network: str,
                  public_network_id: str, admin_password: str, validation: bool = False) -> str:
    """What the guideline needs enabled (resize and snapshot included). Guest SSH validation only
    with `validation`: on libvirt's test driver, the default hypervisor, guests have no network."""
    return f"""[DEFAULT]
log_file = tempest.log

[oslo_concurrency]
lock_path = {accounts.parent.parent / "locks"}

[auth]
use_dynamic_credentials = false
test_accounts_file = {accounts}
default_credentials_domain_name = Default
admin_username = admin
admin_password = {admin_password}
admin_project_name = admin
admin_domain_name = Default

[identity]
uri_v3 = {url}/identity/v3
auth_version = v3
region = RegionOne
v3_endpoint_type = public

[identity-feature-enabled]
api_v2 = false
api_v3 = true

[compute]
image_ref = {image_id}
image_ref_alt = {image_alt}
flavor_ref = 1
flavor_ref_alt = 2
fixed_network_name = {network}
build_timeout = {300 if validation else 120}
build_interval = 1
min_compute_nodes = {1 if validation else 2}
min_microversion = 2.1
max_microversion = latest

[compute-feature-enabled]
# nova's enable_instance_password, on in `eventsvm up` as in nova: the create answers adminPass
enable_instance_password = true
resize = true
snapshot = true
pause = true
suspend = true
shelve = true
console_output = true
change_password = false
rescue = false
interface_attach = false
live_migration = false
cold_migration = false
vnc_console = false
spice_console = false
serial_console = false
personality = false
attach_encrypted_volume = false
config_drive = false

{_validation_conf(network) if validation else VALIDATION_OFF}

[network]
floating_network_name = public
public_network_id = {public_network_id}
shared_physical_network = false
build_timeout = 60

[network-feature-enabled]
ipv6 = false

[image]
build_timeout = 60

[image-feature-enabled]
api_v1 = false
api_v2 = true

[volume]
build_timeout = 60
catalog_type = volumev3

[volume-feature-enabled]
backup = false
snapshot = true
# the extensions this cinder lists (tempest's default, all, expects cinder's admin-only Hosts)
api_extensions = os-availability-zone,os-vol-tenant-attr,os-used-limits

[service_available]
nova = true
glance = true
neutron = true
cinder = true
swift = false
heat = false
"""


VALIDATION_OFF = """[validation]
run_validation = false"""


def _validation_conf(network: str) -> str:
    """tempest SSHes as root, with the key pair it creates, to each guest's fixed IP on the shared
    network: the host holds that subnet's gateway on the network's bridge. No security groups:
    neutron's security-group API is not served here."""
    return f"""[validation]
run_validation = true
connect_method = fixed
auth_method = keypair
ip_version_for_ssh = 4
network_for_ssh = {network}
image_ssh_user = root
image_alt_ssh_user = root
security_group = false
security_group_rules = false
connect_timeout = 30
ssh_timeout = 180"""


def select(workspace: Path, validation: bool = False) -> None:
    """tempest's include list: one anchored regex per required test id."""
    tests = [test for test in guideline_tests() if not validation or test in VALIDATION_TESTS]
    (workspace / "include.txt").write_text("".join(f"^{test}\\b\n" for test in tests))


def run_results(*workspaces: Path) -> dict[str, str]:
    """test id → status, from the CSVs subunit2csv wrote (attributes stripped); over several runs a
    test's best status wins (one that passed in any run passed)."""
    results: dict[str, str] = {}
    for workspace in workspaces:
        with (workspace / "results.csv").open() as handle:
            for row in csv.DictReader(handle):
                test = row["test"].split("[", 1)[0]
                if results.get(test) != "success":
                    results[test] = row["status"]
    return results


def judge(workspace: Path, update: bool, also: Path | None = None) -> int:
    """Exit status of the run: 1 when a test on the passing list did not pass now."""
    required = guideline_tests()
    extra = [also] if also is not None and (also / "results.csv").is_file() else []
    results = run_results(workspace, *extra)
    passed = sorted(test for test in required if results.get(test) == "success")
    before = set(PASSING.read_text().split()) if PASSING.exists() else set()
    lost = sorted(before - set(passed))
    gained = sorted(set(passed) - before)
    compute = [test for test in required if ".compute." in test or ".identity." in test]
    print(f"interop: {len(passed)} of {len(required)} guideline tests pass "
          f"({sum(1 for t in compute if t in passed)} of {len(compute)} compute and identity)")
    for test in gained:
        print(f"  new pass: {test}")
    for test in lost:
        print(f"  REGRESSION: {test} ({results.get(test, 'not run')})")
    if update:
        PASSING.write_text("".join(f"{test}\n" for test in passed))
        print(f"interop: wrote {PASSING.relative_to(ROOT)}")
        return 0
    return 1 if lost else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="interop.py")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("provision")
    p.add_argument("url")
    p.add_argument("workspace", type=Path)
    p.add_argument("--validation", action="store_true")
    s = sub.add_parser("select")
    s.add_argument("workspace", type=Path)
    s.add_argument("--validation", action="store_true")
    j = sub.add_parser("judge")
    j.add_argument("workspace", type=Path)
    j.add_argument("--also", type=Path)
    j.add_argument("--update", action="store_true")
    args = parser.parse_args(argv)
    if args.command == "provision":
        provision(args.url, args.workspace, args.validation)
        return 0
    if args.command == "select":
        select(args.workspace, args.validation)
        return 0
    return judge(args.workspace, args.update, args.also)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
