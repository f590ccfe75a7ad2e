//! The payload of `test`, `lint` and `security-scan` jobs: defined once, with the other kinds'
//! payloads, in `kiln-kinds` (checked at enqueue).

pub use kiln_kinds::ValidationPayload;
