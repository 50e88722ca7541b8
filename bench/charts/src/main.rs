//! `charts <results.json> <out-dir>`: PNG charts of the results `scripts/bench-peers`
//! writes. Each chart whose section is in the file is written into out-dir, and its path
//! printed; errors name the file and the place in it.

mod charts;
mod results;
mod text;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use results::{Error, Results};

const USAGE: &str = "usage: charts <results.json> <out-dir>

Reads the results JSON that scripts/bench-peers writes and draws, for each section it has:
  throughput-<phase>.png  records/s per client, one panel per record size
  cpu-<phase>.png         CPU seconds per million records per client
  latency.png             p50 / p99 / p99.9 per client
  scaling.png             kpipe command events/s by --threads
Prints the path of each PNG it wrote.";

fn run(input: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let results = Results::load(input)?;
    if results.throughput.is_empty() && results.latency.is_empty() && results.scaling.is_empty() {
        return Err(Error(format!(
            "{}: no `throughput`, `latency` or `scaling` entries: nothing to chart",
            input.display()
        )));
    }
    std::fs::create_dir_all(out_dir)
        .map_err(|e| Error(format!("cannot create {}: {e}", out_dir.display())))?;
    charts::render_all(&results, out_dir)
}

fn main() -> ExitCode {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let [input, out_dir] = args.as_slice() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(Path::new(input), Path::new(out_dir)) {
        Ok(paths) => {
            for p in paths {
                println!("{}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("charts: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh, empty directory under the system temp dir.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kpipe-charts-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sample.json")
    }

    #[test]
    fn the_fixture_renders_every_chart() {
        let dir = temp_dir("all");
        let paths = run(&fixture(), &dir).unwrap();
        let names: Vec<String> = paths
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "throughput-produce.png",
                "throughput-consume.png",
                "cpu-produce.png",
                "cpu-consume.png",
                "latency.png",
                "scaling.png"
            ]
        );
        for p in &paths {
            let bytes = std::fs::read(p).unwrap();
            assert!(
                bytes.len() > 10_000,
                "{} is only {} bytes",
                p.display(),
                bytes.len()
            );
            assert_eq!(
                &bytes[..8],
                b"\x89PNG\r\n\x1a\n",
                "{} is not a PNG",
                p.display()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_present_sections_are_drawn() {
        let dir = temp_dir("scaling");
        let input = dir.join("in.json");
        std::fs::create_dir_all(&dir).unwrap();
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixture()).unwrap()).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("throughput");
        obj.remove("latency");
        std::fs::write(&input, v.to_string()).unwrap();
        let paths = run(&input, &dir.join("out")).unwrap();
        assert_eq!(paths, [dir.join("out/scaling.png")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_file() {
        let dir = temp_dir("errors");
        std::fs::create_dir_all(&dir).unwrap();
        let input = dir.join("bad.json");
        std::fs::write(&input, "{\"meta\": {\"date\": \"2026-01-01\"").unwrap();
        let e = run(&input, &dir).unwrap_err();
        assert!(
            e.0.starts_with(&format!("{}: not valid JSON", input.display())),
            "{e}"
        );
        let e = run(&dir.join("missing.json"), &dir).unwrap_err();
        assert!(e.0.contains("missing.json"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
