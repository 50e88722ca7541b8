//! The telemetry event on the wire: written by hand into one buffer per event (the fields
//! are known, so JSON needs no serializer), read back without allocating.

use bytes::Bytes;
use serde::Deserialize;

/// Device statuses, in the order a device cycles through them.
const STATUSES: [&str; 5] = ["healthy", "degraded", "healthy", "healthy", "offline"];

/// `,"pad":"` + `"` around the padding: what padding costs beyond its `x`s.
const PAD_FIELD: usize = 9;

/// One event as it is sent: `{"run":R,"device":"device-D","status":S,"seq":N,
/// "sent_at_us":T}`, with `,"pad":"xx…"` before the closing brace when the event is padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    /// The run that produced it (so runs sharing a topic do not mix).
    pub run: u64,
    /// Device number; the key is `device-{device}`.
    pub device: u32,
    /// Per-device sequence number, from 0.
    pub seq: u64,
    /// Send time (scheduled, with --rate), microseconds since the Unix epoch.
    pub sent_at_us: u64,
}

impl Event {
    /// The event as JSON, padded with an `x` string to at least `pad_to` bytes (padding
    /// needs 9 bytes of its own, so a nearly long enough event ends up to 8 bytes over).
    pub fn encode(&self, pad_to: usize) -> Bytes {
        let mut n = [
            itoa::Buffer::new(),
            itoa::Buffer::new(),
            itoa::Buffer::new(),
            itoa::Buffer::new(),
        ];
        let [run, device, seq, at] = &mut n;
        let (run, device, seq, at) = (
            run.format(self.run),
            device.format(self.device),
            seq.format(self.seq),
            at.format(self.sent_at_us),
        );
        let status = STATUSES[(self.seq % STATUSES.len() as u64) as usize];
        let parts: [&[u8]; 11] = [
            b"{\"run\":",
            run.as_bytes(),
            b",\"device\":\"device-",
            device.as_bytes(),
            b"\",\"status\":\"",
            status.as_bytes(),
            b"\",\"seq\":",
            seq.as_bytes(),
            b",\"sent_at_us\":",
            at.as_bytes(),
            b"}",
        ];
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let pad = if len < pad_to {
            Some(pad_to.saturating_sub(len + PAD_FIELD))
        } else {
            None
        };
        let mut out = Vec::with_capacity(len + pad.map_or(0, |p| p + PAD_FIELD));
        for p in &parts[..parts.len() - 1] {
            out.extend_from_slice(p);
        }
        if let Some(x) = pad {
            out.extend_from_slice(b",\"pad\":\"");
            out.resize(out.len() + x, b'x');
            out.push(b'"');
        }
        out.push(b'}');
        Bytes::from(out)
    }

    /// Read an event back; `None` for anything that is not one (another program's record).
    pub fn decode(value: &[u8]) -> Option<Event> {
        #[derive(Deserialize)]
        struct Wire<'a> {
            run: u64,
            #[serde(borrow)]
            device: &'a str,
            seq: u64,
            sent_at_us: u64,
        }
        let w: Wire = serde_json::from_slice(value).ok()?;
        Some(Event {
            run: w.run,
            device: w.device.strip_prefix("device-")?.parse().ok()?,
            seq: w.seq,
            sent_at_us: w.sent_at_us,
        })
    }
}

/// The record keys `device-0` … `device-{n-1}`, made once: a `Bytes` that borrows a
/// `'static` slice clones without touching a shared reference count, which every event's
/// key would otherwise do on two threads.
pub fn device_keys(n: u32) -> Vec<Bytes> {
    let text: &'static str = Box::leak(
        (0..n)
            .map(|d| format!("device-{d}"))
            .collect::<String>()
            .into_boxed_str(),
    );
    let mut at = 0;
    (0..n)
        .map(|d| {
            let len = "device-".len() + itoa::Buffer::new().format(d).len();
            let key = Bytes::from_static(&text.as_bytes()[at..at + len]);
            at += len;
            key
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            run: 1_764_000_000_000_000,
            device: 42,
            seq: 7,
            sent_at_us: 1_764_000_000_123_456,
        }
    }

    #[test]
    fn an_event_is_the_json_it_always_was_and_reads_back() {
        let bytes = event().encode(0);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"run": 1_764_000_000_000_000u64, "device": "device-42",
                "status": "healthy", "seq": 7, "sent_at_us": 1_764_000_000_123_456u64})
        );
        assert_eq!(Event::decode(&bytes), Some(event()));
    }

    #[test]
    fn padding_reaches_the_size_asked_for_and_still_reads_back() {
        let plain = event().encode(0).len();
        for want in [plain + 9, plain + 10, 1000, 4096] {
            let bytes = event().encode(want);
            assert_eq!(bytes.len(), want, "asked for {want}");
            assert_eq!(Event::decode(&bytes), Some(event()));
        }
        // Too close for the pad field: the event goes over, never under, and never panics.
        for want in plain + 1..plain + 9 {
            let bytes = event().encode(want);
            assert!(
                bytes.len() >= want && bytes.len() <= want + 8,
                "{want}: {}",
                bytes.len()
            );
            assert_eq!(Event::decode(&bytes), Some(event()));
        }
        assert_eq!(event().encode(plain).len(), plain, "long enough already");
    }

    #[test]
    fn records_that_are_not_events_are_told_apart() {
        for other in [
            &b"not json"[..],
            b"{}",
            b"{\"run\":1,\"device\":\"sensor-1\",\"seq\":1,\"sent_at_us\":1}",
            b"{\"run\":1,\"device\":\"device-x\",\"seq\":1,\"sent_at_us\":1}",
            b"{\"run\":-1,\"device\":\"device-1\",\"seq\":1,\"sent_at_us\":1}",
        ] {
            assert_eq!(
                Event::decode(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }

    #[test]
    fn device_keys_are_the_names_in_order() {
        let keys = device_keys(12);
        assert_eq!(keys.len(), 12);
        assert_eq!(&keys[0][..], b"device-0");
        assert_eq!(&keys[11][..], b"device-11");
    }
}
