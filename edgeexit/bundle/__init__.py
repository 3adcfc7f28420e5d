"""The bundle: a typed manifest (v2) with its JSON Schema, segment files in one or more formats, the
unsplit reference model, calibration and reports; written atomically, verified before use. Beside it, the deployable
bundle (slim.py): the same contract, only what the device runs."""

from edgeexit.bundle.manifest import (
    BATCH,
    FORMATS,
    MANIFEST,
    REPORTS,
    SCHEMA_FILE,
    SCHEMA_VERSION,
    BatchRange,
    Ensemble,
    Exit,
    InputInfo,
    Manifest,
    Provenance,
    Reference,
    SegmentRef,
    TensorSpec,
    content_digest,
    digest,
    json_schema,
)
from edgeexit.bundle.store import (
    Bundle,
    add_files,
    is_bundle,
    load_bundle,
    sha256,
    write_bundle,
)
from edgeexit.bundle.slim import deployable_bytes, slim_path, write_slim

__all__ = [
    "BATCH", "FORMATS", "MANIFEST", "SCHEMA_FILE", "SCHEMA_VERSION", "BatchRange", "Bundle", "Ensemble", "Exit",
    "InputInfo", "Manifest", "Provenance", "REPORTS", "Reference", "SegmentRef", "TensorSpec", "add_files",
    "content_digest", "digest",
    "deployable_bytes", "is_bundle", "json_schema", "load_bundle", "sha256", "slim_path", "write_bundle", "write_slim",
]
