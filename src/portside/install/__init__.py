"""``portside install`` / ``portside uninstall``: a self-contained registry on one host."""
