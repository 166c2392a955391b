"""The Zarr v3 store of fitted Gaussian fields (the Deep Gaussian Prior's raw data). Imports zarr and numpy only.

Layout and units: `prior_store.schema`. Create / open / validate and whole-chunk writes: `prior_store.store`.
"""

from prior_store.schema import (
    SCHEMA_VERSION,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_NAMES,
    STATUS_PENDING,
    StoreConfig,
)
from prior_store.store import (
    PriorStore,
    StoreError,
    StoreMismatchError,
    create_store,
    open_or_create,
    open_store,
    plan_digest,
    store_exists,
)
from prior_store.summary import describe_store

__all__ = [
    "SCHEMA_VERSION",
    "STATUS_DONE",
    "STATUS_FAILED",
    "STATUS_NAMES",
    "STATUS_PENDING",
    "PriorStore",
    "StoreConfig",
    "StoreError",
    "StoreMismatchError",
    "create_store",
    "describe_store",
    "open_or_create",
    "open_store",
    "plan_digest",
    "store_exists",
]
