"""A fake compute host for libvirt's test driver: a node description file and its URI."""

from __future__ import annotations

import os
import tempfile
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path


def write_node_xml(path: str | Path, vcpus: int, memory_mb: int, *, mhz: int = 2400,
                   model: str = "x86_64", sockets: int = 1, threads: int = 1) -> Path:
    """Write a test-driver node description with `vcpus` CPUs and `memory_mb` MiB; return its path.

    `vcpus` must split evenly into `sockets` x cores x `threads`. The file is replaced atomically,
    because every connection to a test:///path URI reads it afresh.
    """
    if vcpus < 1 or memory_mb < 1:
        raise ValueError(f"a node needs at least 1 vCPU and 1 MiB (got {vcpus}, {memory_mb} MiB)")
    if vcpus % (sockets * threads):
        raise ValueError(f"{vcpus} vCPUs do not split into {sockets} sockets x {threads} threads")
    node = ET.Element("node")
    cpu = ET.SubElement(node, "cpu")
    for tag, value in (("mhz", mhz), ("model", model), ("active", vcpus), ("nodes", 1),
                       ("sockets", sockets), ("cores", vcpus // (sockets * threads)),
                       ("threads", threads)):
        ET.SubElement(cpu, tag).text = str(value)
    # The test driver reads memory in KiB.
    ET.SubElement(node, "memory").text = str(memory_mb * 1024)
    target = Path(path).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("wb", dir=target.parent, prefix=".node-", delete=False) as tmp:
        ET.ElementTree(node).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp.name, target)
    return target


def test_uri_for(path: str | Path) -> str:
    """The libvirt URI of the fake host described by the node file at `path`."""
    return "test://" + urllib.parse.quote(str(Path(path).resolve()))


def is_test_driver(uri: str) -> bool:
    """Whether `uri` names libvirt's test driver, in this process (test:///...) or in a libvirtd
    (test+unix:///default?socket=..., whose guests outlive the process that made them)."""
    return uri.split(":", 1)[0].split("+", 1)[0] == "test"


# Its name starts with "test_"; keep pytest from collecting it where a test module imports it.
test_uri_for.__test__ = False  # type: ignore[attr-defined]
