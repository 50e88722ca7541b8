//! The three-node cluster's nodes, for the tests that act on them through `scripts/kafka`
//! (kill, pause, stop, start...): only processes that script started, by pid.

use std::process::Command;
use std::sync::{Mutex, MutexGuard};

/// `scripts/kafka`: `KPIPE_KAFKA_SCRIPT` (set by `./scripts/test`), else this tree's.
fn script() -> String {
    std::env::var("KPIPE_KAFKA_SCRIPT")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka").to_owned())
}

/// Run `scripts/kafka ARGS` (fault verbs always act on the cluster); its stdout, trimmed.
pub fn kafka(args: &[&str]) -> String {
    let out = Command::new(script())
        .args(args)
        .output()
        .expect("run scripts/kafka");
    assert!(
        out.status.success(),
        "scripts/kafka {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Resume paused nodes, then start the missing ones together (`up`: one alone cannot
/// start without a controller majority); `up` returns once all are in sync.
pub fn mend() {
    let script = script();
    for n in ["1", "2", "3"] {
        let _ = Command::new(&script).args(["resume", n]).output();
    }
    let _ = Command::new(&script).args(["up", "--nodes", "3"]).output();
}

/// One test at a time (`serial`, the test file's lock), on a cluster whose three nodes all
/// run; they are brought back up when the test ends, passed or not.
pub struct Session {
    _lock: MutexGuard<'static, ()>,
}

impl Session {
    pub fn begin(serial: &'static Mutex<()>) -> Session {
        let lock = super::serial(serial);
        let _ = env_logger::builder().is_test(true).try_init();
        mend();
        kafka(&["status", "--nodes", "3"]);
        Session { _lock: lock }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        mend();
    }
}
