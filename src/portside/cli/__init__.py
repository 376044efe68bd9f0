"""The ``portside`` command line."""
