//! Builds the images without the `kiln` binary: `cargo run -p kiln-images --example build_images [NAME]`.

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let opts = kiln_images::BuildOptions {
        images_dir: kiln_images::default_images_dir(),
        only: std::env::args().nth(1),
        force: false,
    };
    if let Err(e) = kiln_images::build(&opts) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
