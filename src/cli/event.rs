//! The telemetry event on the wire: written by hand into one buffer per event (the fields
//! are known, so JSON needs no serializer), read back without allocating.

use bytes::{Bytes, BytesMut};
use serde::Deserialize;

/// Bytes of the buffers generators write events into (see [`Event::encode_into`]).
pub const CHUNK_BYTES: usize = 16 << 10;

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
    #[cfg(test)]
    pub fn encode(&self, pad_to: usize) -> Bytes {
        self.encode_into(pad_to, &mut BytesMut::new())
    }

    /// As [`encode`](Self::encode), written into `chunk`, which is replaced by a fresh one
    /// of [`CHUNK_BYTES`] when full: events of one chunk share one allocation (freed when
    /// the last of them is), instead of one allocation each, made on the generator's thread
    /// and freed on the writer's.
    pub fn encode_into(&self, pad_to: usize, chunk: &mut BytesMut) -> Bytes {
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
        let total = len + pad.map_or(0, |p| p + PAD_FIELD);
        if chunk.capacity() - chunk.len() < total {
            *chunk = BytesMut::with_capacity(CHUNK_BYTES.max(total));
        }
        for p in &parts[..parts.len() - 1] {
            chunk.extend_from_slice(p);
        }
        if let Some(x) = pad {
            chunk.extend_from_slice(b",\"pad\":\"");
            chunk.resize(chunk.len() + x, b'x');
            chunk.extend_from_slice(b"\"");
        }
        chunk.extend_from_slice(b"}");
        chunk.split().freeze()
    }

    /// Read an event back; `None` for anything that is not one (another program's record).
    /// Events as [`encode`](Self::encode) writes them are read by a direct scan; anything
    /// else goes through serde_json (the same fields in another order or spacing still count).
    pub fn decode(value: &[u8]) -> Option<Event> {
        Self::scan(value).or_else(|| Self::parse(value))
    }

    /// The layout `encode` writes, byte for byte; `None` at the first difference.
    fn scan(value: &[u8]) -> Option<Event> {
        let mut r = Scan(value);
        r.tag(b"{\"run\":")?;
        let run = r.number()?;
        r.tag(b",\"device\":\"device-")?;
        let device = u32::try_from(r.number()?).ok()?;
        r.tag(b"\",\"status\":\"")?;
        r.plain_string()?;
        r.tag(b",\"seq\":")?;
        let seq = r.number()?;
        r.tag(b",\"sent_at_us\":")?;
        let sent_at_us = r.number()?;
        if r.0 != b"}" {
            r.tag(b",\"pad\":\"")?;
            r.plain_string()?;
            if r.0 != b"}" {
                return None;
            }
        }
        Some(Event {
            run,
            device,
            seq,
            sent_at_us,
        })
    }

    fn parse(value: &[u8]) -> Option<Event> {
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

/// A cursor over the bytes of an event, for [`Event::scan`].
struct Scan<'a>(&'a [u8]);

impl Scan<'_> {
    fn tag(&mut self, tag: &[u8]) -> Option<()> {
        self.0 = self.0.strip_prefix(tag)?;
        Some(())
    }

    /// A JSON number that is a u64: digits, no sign, fraction, exponent or leading zero.
    fn number(&mut self) -> Option<u64> {
        let digits = self.0.iter().take_while(|b| b.is_ascii_digit()).count();
        let (text, rest) = self.0.split_at(digits);
        if digits == 0 || (digits > 1 && text[0] == b'0') {
            return None;
        }
        if matches!(rest.first(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut n: u64 = 0;
        for d in text {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        self.0 = rest;
        Some(n)
    }

    /// The rest of a string without escapes or control characters, and its closing quote.
    fn plain_string(&mut self) -> Option<()> {
        let end = self
            .0
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if self.0[end] != b'"' || std::str::from_utf8(&self.0[..end]).is_err() {
            return None;
        }
        self.0 = &self.0[end + 1..];
        Some(())
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

/// An event's tag, for the delivery handler: its device and sequence number in one u64.
pub(super) fn tag(device: u32, seq: u64) -> u64 {
    (u64::from(device) << SEQ_BITS) | (seq & SEQ_MASK)
}

pub(super) fn untag(tag: u64) -> (u32, u64) {
    ((tag >> SEQ_BITS) as u32, tag & SEQ_MASK)
}

/// Bits of an event tag that hold the sequence number (2^40: eleven days of a million
/// events a second to one device); the rest hold the device (so at most 2^24 devices).
const SEQ_BITS: u32 = 40;
pub(super) const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
/// The most devices an event tag can name.
pub(super) const MAX_DEVICES: u32 = 1 << (64 - SEQ_BITS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_holds_the_device_and_the_sequence() {
        for (device, seq) in [(0, 0), (7, 12_345), (MAX_DEVICES - 1, SEQ_MASK)] {
            assert_eq!(untag(tag(device, seq)), (device, seq));
        }
    }

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
    fn events_written_into_one_chunk_stay_apart() {
        let mut chunk = BytesMut::new();
        let mut events = Vec::new();
        for seq in 0..2000 {
            let e = Event { seq, ..event() };
            events.push((
                e,
                e.encode_into(if seq % 2 == 0 { 0 } else { 200 }, &mut chunk),
            ));
        }
        for (e, bytes) in &events {
            assert_eq!(Event::decode(bytes), Some(*e));
        }
        // Bigger than a chunk: a buffer of its own, the same bytes.
        let big = event().encode_into(CHUNK_BYTES * 2, &mut chunk);
        assert_eq!(big, event().encode(CHUNK_BYTES * 2));
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
    fn the_direct_scan_and_serde_json_agree() {
        let padded = event().encode(300);
        let plain = event().encode(0);
        assert_eq!(Event::scan(&plain), Event::parse(&plain));
        assert_eq!(Event::scan(&padded), Event::parse(&padded));
        assert!(Event::scan(&plain).is_some());
        // Valid events in another shape: the scan declines, serde_json reads them.
        let respaced = b"{ \"seq\": 7, \"run\": 5, \"device\": \"device-3\", \"sent_at_us\": 9 }";
        assert_eq!(Event::scan(respaced), None);
        assert_eq!(
            Event::decode(respaced).map(|e| (e.run, e.device, e.seq)),
            Some((5, 3, 7))
        );
        let escaped = br#"{"run":5,"device":"device-3","status":"h\u0065","seq":7,"sent_at_us":9}"#;
        assert_eq!(Event::scan(escaped), None);
        assert!(Event::decode(escaped).is_some());
        // Not JSON a u64 reads from, in either path.
        for bad in [
            &br#"{"run":05,"device":"device-3","status":"x","seq":7,"sent_at_us":9}"#[..],
            br#"{"run":5.0,"device":"device-3","status":"x","seq":7,"sent_at_us":9}"#,
            br#"{"run":99999999999999999999,"device":"device-3","status":"x","seq":7,"sent_at_us":9}"#,
            br#"{"run":5,"device":"device-3","status":"x","seq":7,"sent_at_us":9}x"#,
            br#"{"run":5,"device":"device-3","status":"x","seq":7,"sent_at_us":9,"pad":"x}"#,
        ] {
            assert_eq!(Event::decode(bad), None, "{}", String::from_utf8_lossy(bad));
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
