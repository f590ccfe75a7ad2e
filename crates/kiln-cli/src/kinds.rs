//! The kind modules of this build of Kiln: the one list `kiln worker`, `kiln up` and the fleet
//! file's checks are built from. A new kind is a module added here (its payload type lives in
//! `kiln-kinds`, its name in `kiln_queue::JobKind`).

use kiln_worker::Registry;

/// Every kind module this binary can run.
pub fn registry() -> Registry {
    Registry::new()
        .with(kiln_pipeline::ValidationModule)
        .with(kiln_generate::GenerationModule::default())
}
