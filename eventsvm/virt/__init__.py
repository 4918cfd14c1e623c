"""The libvirt side of a compute host: domain XML as nova writes it (xml), an idempotent hypervisor
(hypervisor), the test driver's node descriptions (node). Import each name from its module: nothing
is re-exported here."""
