//! `sqlx::migrate!` embeds `migrations/` at compile time but does not tell cargo to watch the
//! directory: without this, a new migration file leaves a stale schema in the binary.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
