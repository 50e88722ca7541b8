//! `--metrics-addr ADDR`: the run's statistics at `http://ADDR/metrics`, in the Prometheus
//! text format of [`kpipe::metrics`], from a small synchronous HTTP server (tiny_http) on a
//! thread of its own.
//!
//! ```text
//!  watcher (once a second, and once more after the drain):
//!      producer.stats(), pool.stats() ─▶ Prometheus::render ─▶ publish ─┐
//!  kpipe-metrics thread:                                                 ▼
//!      GET /metrics ─────────────────────────────────────────────▶ the last text published
//! ```
//!
//! A scrape reads the text the watcher last published: it takes no stats itself, so
//! however often it comes it never waits on the writer thread or a consumer member, and
//! the figures are at most a second old. Anything else than `GET /metrics` is a 404.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use tiny_http::{Header, Response, Server};

use super::args::UsageError;

/// How long the server thread waits for a request before it looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// The content type of the text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The endpoint: the server thread and the text it serves. Stopped (and joined) when
/// dropped, so it lasts as long as the run that holds it.
pub struct Endpoint {
    text: Arc<Mutex<Arc<str>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Listen on `addr` and serve from a thread of its own; a bad address, or one that
    /// cannot be bound, is a usage error naming it.
    pub fn start(addr: &str) -> Result<Endpoint, UsageError> {
        let server = Server::http(addr).map_err(|e| {
            UsageError(format!(
                "--metrics-addr {addr}: cannot listen there ({e}); give a free host:port, e.g. 127.0.0.1:9464"
            ))
        })?;
        let text: Arc<Mutex<Arc<str>>> = Arc::new(Mutex::new(Arc::from("")));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (text, stop) = (text.clone(), stop.clone());
            thread::Builder::new()
                .name("kpipe-metrics".into())
                .spawn(move || serve(&server, &text, &stop))
                .map_err(|e| UsageError(format!("--metrics-addr: cannot start its thread: {e}")))?
        };
        Ok(Endpoint {
            text,
            stop,
            thread: Some(thread),
        })
    }

    /// Serve `text` from now on.
    pub fn publish(&self, text: String) {
        *self.text.lock().unwrap_or_else(|p| p.into_inner()) = Arc::from(text);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            // The thread looks at the flag every POLL; a response being written is bounded
            // by the socket, which tiny_http gives no timeout: do not wait on a stuck one.
            let deadline = std::time::Instant::now() + POLL * 10;
            while !t.is_finished() && std::time::Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                log::warn!("the metrics server thread did not stop within 1 s; leaving it");
            }
        }
    }
}

/// Answer requests until `stop` is set.
fn serve(server: &Server, text: &Mutex<Arc<str>>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let request = match server.recv_timeout(POLL) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            Err(e) => {
                log::warn!("metrics server: {e}");
                thread::sleep(POLL);
                continue;
            }
        };
        let path = request.url().split('?').next().unwrap_or("");
        let response = if *request.method() == tiny_http::Method::Get && path == "/metrics" {
            let body = text.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let header = Header::from_bytes("Content-Type", CONTENT_TYPE).expect("a valid header");
            Response::from_string(&*body).with_header(header)
        } else {
            Response::from_string("not found: kpipe serves GET /metrics\n").with_status_code(404)
        };
        if let Err(e) = request.respond(response) {
            log::debug!("metrics server: answering a request: {e}");
        }
    }
}
