//! Kafka's own tools (from the jars scripts/kafka fetched) run as bounded child processes:
//! a test never waits on a JVM longer than it says.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A Kafka main class started through `scripts/kafka run-class` (which execs the JVM, so the
/// child is the JVM), its output collected on threads of their own. Dropping it kills the
/// JVM, on every path, panics included.
pub struct JavaTool {
    what: String,
    child: Child,
    out: Option<JoinHandle<Vec<u8>>>,
    err: Option<JoinHandle<Vec<u8>>>,
}

impl JavaTool {
    /// Start `class` with `args`.
    pub fn start(class: &str, args: &[&str]) -> JavaTool {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
        let mut child = Command::new(script)
            .arg("run-class")
            .arg(class)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {class} through scripts/kafka: {e}"));
        let drain = |mut r: Box<dyn Read + Send>| {
            thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                buf
            })
        };
        let out = drain(Box::new(child.stdout.take().unwrap()));
        let err = drain(Box::new(child.stderr.take().unwrap()));
        let short = class.rsplit('.').next().unwrap_or(class);
        JavaTool {
            what: format!("{short} {}", args.join(" ")),
            child,
            out: Some(out),
            err: Some(err),
        }
    }

    /// Wait for the tool to exit, at most `limit` (then kill it and panic, with what it
    /// printed), and return its exit status and output.
    pub fn finish(mut self, limit: Duration) -> Output {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let out = self.collect();
                panic!(
                    "{} did not exit within {limit:?}; it printed:\n{}\n{}",
                    self.what,
                    String::from_utf8_lossy(&out.0),
                    String::from_utf8_lossy(&out.1)
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = self.collect();
        Output {
            status,
            stdout,
            stderr,
        }
    }

    fn collect(&mut self) -> (Vec<u8>, Vec<u8>) {
        let join =
            |h: Option<JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
        (join(self.out.take()), join(self.err.take()))
    }
}

impl Drop for JavaTool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run `class` with `args` to its end, at most `limit`; panic unless it exits 0. Returns
/// what it printed on stdout.
pub fn run_class(class: &str, args: &[&str], limit: Duration) -> String {
    let what = format!("{class} {}", args.join(" "));
    let out = JavaTool::start(class, args).finish(limit);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kafka's console share consumer as a member of share group `group`: it reads (and
/// acknowledges) `max_messages` records of `topic`, printing each as
/// `Partition:P<TAB>Offset:O<TAB>value`, then closes, which releases what it acquired
/// beyond them. At most `limit`; panics unless it exits 0. Returns what it printed.
/// (Share groups start at the latest offset: set `share.auto.offset.reset=earliest` on the
/// group first to read what is there already.)
pub fn console_share_consumer(
    topic: &str,
    group: &str,
    max_messages: usize,
    limit: Duration,
) -> String {
    run_class(
        "org.apache.kafka.tools.consumer.ConsoleShareConsumer",
        &[
            "--bootstrap-server",
            &super::brokers(),
            "--topic",
            topic,
            "--group",
            group,
            "--max-messages",
            &max_messages.to_string(),
            "--timeout-ms",
            &limit.as_millis().to_string(),
            "--formatter-property",
            "print.partition=true",
            "--formatter-property",
            "print.offset=true",
        ],
        limit,
    )
}
