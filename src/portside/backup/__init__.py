"""``portside backup`` / ``portside restore``: a consistent archive of a registry."""
