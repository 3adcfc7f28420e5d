"""The deployable bundle: a typed manifest (v2) with its JSON Schema, segment files in one or more formats, the
unsplit reference model, calibration and reports; written atomically, verified before use."""

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

__all__ = [
    "BATCH", "FORMATS", "MANIFEST", "SCHEMA_FILE", "SCHEMA_VERSION", "BatchRange", "Bundle", "Ensemble", "Exit",
    "InputInfo", "Manifest", "Provenance", "REPORTS", "Reference", "SegmentRef", "TensorSpec", "add_files",
    "content_digest", "digest",
    "is_bundle", "json_schema", "load_bundle", "sha256", "write_bundle",
]
