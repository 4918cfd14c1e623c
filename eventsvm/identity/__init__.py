"""Identity (keystone's role): password hashes, Fernet tokens and their keys, policy and quota."""
