//! Finds the DejaVu Sans fonts that `src/charts.rs` embeds with `include_bytes!`.
//!
//! The directory is `/usr/share/fonts/truetype/dejavu` (Debian's fonts-dejavu-core)
//! unless CHARTS_FONT_DIR names another one holding DejaVuSans.ttf and DejaVuSans-Bold.ttf.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=CHARTS_FONT_DIR");
    let dir = std::env::var_os("CHARTS_FONT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/share/fonts/truetype/dejavu"));
    for (var, file) in [
        ("CHARTS_FONT_REGULAR", "DejaVuSans.ttf"),
        ("CHARTS_FONT_BOLD", "DejaVuSans-Bold.ttf"),
    ] {
        let path = dir.join(file);
        if !path.is_file() {
            eprintln!(
                "error: font {} not found; install Debian's fonts-dejavu-core \
                 (apt-get install fonts-dejavu-core) or set CHARTS_FONT_DIR to a \
                 directory holding DejaVuSans.ttf and DejaVuSans-Bold.ttf",
                path.display()
            );
            std::process::exit(1);
        }
        println!("cargo:rerun-if-changed={}", path.display());
        println!("cargo:rustc-env={var}={}", path.display());
    }
}
