"""Named storage locations (``DISTRIBUTED_STORAGE_CONFIG``) and which one to use."""

from __future__ import annotations

from collections.abc import Mapping

from portside.storage.base import StorageDriver


class Placements:
    """The configured locations; new blobs go to the first preferred one."""

    def __init__(self, drivers: Mapping[str, StorageDriver], preference: list[str]) -> None:
        if not drivers:
            raise ValueError("at least one storage location is required")
        self.drivers = dict(drivers)
        self.preference = [name for name in preference if name in self.drivers] or list(
            self.drivers
        )

    @property
    def write_location(self) -> str:
        """The location new uploads are written to."""
        return self.preference[0]

    def driver(self, location: str) -> StorageDriver:
        """The driver of ``location`` (falls back to the write location if unknown)."""
        return self.drivers.get(location) or self.drivers[self.write_location]

    def read_location(self, locations: list[str]) -> str:
        """The preferred location among those holding a blob."""
        for name in self.preference:
            if name in locations:
                return name
        for name in locations:
            if name in self.drivers:
                return name
        return self.write_location
