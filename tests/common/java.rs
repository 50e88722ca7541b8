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

/// One of the single-file Java programs in `tests/java/` (run by Java's source launcher with
/// the Kafka jars scripts/kafka fetched), as a child process to talk to: its stdout read line
/// by line with deadlines, a line sent on its stdin, its stderr kept for panics. Dropping it
/// kills the JVM, on every path, panics included.
pub struct JavaProgram {
    pub name: String,
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    pub lines: super::share::Lines,
    err: Option<JoinHandle<Vec<u8>>>,
}

impl JavaProgram {
    /// Start `tests/java/<file>` with `args`.
    pub fn start(file: &str, args: &[&str]) -> JavaProgram {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka");
        let out = Command::new(script).arg("classpath").output().unwrap();
        assert!(out.status.success(), "scripts/kafka classpath failed");
        let classpath = String::from_utf8(out.stdout).unwrap();
        let source = format!("{}/tests/java/{file}", env!("CARGO_MANIFEST_DIR"));
        let mut child = Command::new("java")
            .arg("--class-path")
            .arg(classpath.trim())
            .arg(&source)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run java {source}: {e}"));
        let name = file.trim_end_matches(".java").to_owned();
        let lines = super::share::Lines::read(child.stdout.take().unwrap(), &name);
        let mut stderr = child.stderr.take().unwrap();
        let err = thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        JavaProgram {
            name,
            stdin: child.stdin.take(),
            child,
            lines,
            err: Some(err),
        }
    }

    /// Send `line` on its stdin.
    pub fn say(&mut self, line: &str) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: writing to its stdin: {e}", self.name));
    }

    /// Wait for it to exit, at most `limit` (then kill it and panic); its exit status and
    /// what it printed on stderr.
    pub fn wait(mut self, limit: Duration) -> (std::process::ExitStatus, String) {
        self.stdin.take();
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let err = self.stderr();
                panic!(
                    "{} did not exit within {limit:?}; stderr:\n{err}",
                    self.name
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        let err = self.stderr();
        (status, err)
    }

    /// What it printed on stderr (once it has exited or been killed).
    fn stderr(&mut self) -> String {
        let buf = self
            .err
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Drop for JavaProgram {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
