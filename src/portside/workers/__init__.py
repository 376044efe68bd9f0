"""Background jobs. In the all-in-one mode they run as tasks inside ``portside serve``."""
