"""Blob storage: the driver protocol, the drivers and their registry.

See :mod:`portside.storage.base` for the contract, :mod:`portside.storage.layout` for
where objects live and :mod:`portside.storage.drivers` for configuring drivers by name.
"""

from portside.storage.base import (
    ObjectNotFound,
    StorageDriver,
    StorageError,
    UploadAppender,
    UploadState,
)
from portside.storage.drivers import (
    DRIVER_NAMES,
    UNSUPPORTED_DRIVER_NAMES,
    create_driver,
    validate_storage_params,
)
from portside.storage.layout import blob_path
from portside.storage.local import LocalStorage
from portside.storage.s3 import S3Storage

__all__ = [
    "DRIVER_NAMES",
    "UNSUPPORTED_DRIVER_NAMES",
    "LocalStorage",
    "ObjectNotFound",
    "S3Storage",
    "StorageDriver",
    "StorageError",
    "UploadAppender",
    "UploadState",
    "blob_path",
    "create_driver",
    "validate_storage_params",
]
