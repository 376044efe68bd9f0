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

# S3Storage is imported from portside.storage.s3 directly: importing boto3 for every
# deployment would cost ~35 MB even where only local storage is used.

__all__ = [
    "DRIVER_NAMES",
    "UNSUPPORTED_DRIVER_NAMES",
    "LocalStorage",
    "ObjectNotFound",
    "StorageDriver",
    "StorageError",
    "UploadAppender",
    "UploadState",
    "blob_path",
    "create_driver",
    "validate_storage_params",
]
