"""Identity, credentials, registry tokens and the permission decision."""
