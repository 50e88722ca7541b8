//! Choosing a partition for each record.
//!
//! Like the Java client, every built-in balancer sends a record **with a key** to
//! `murmur2(key) % partitions`, so one key always lands on one partition and per-key order
//! holds; the balancers differ in where records **without a key** go. A custom [`Balance`]
//! implementation sees keys too and may decide otherwise.

use std::fmt;

/// Picks a partition for a record.
pub trait Balance: Send + 'static {
    /// Return a partition index below `pending_bytes.len()`.
    ///
    /// `pending_bytes[p]` is the number of bytes queued or in flight for partition `p` of
    /// `topic` right now.
    fn partition(&mut self, topic: &str, key: Option<&[u8]>, pending_bytes: &[u64]) -> usize;
}

/// The built-in balancers, or a custom one.
pub enum Balancer {
    /// Unkeyed records go to the partition with the fewest bytes queued or in flight
    /// (the Go design's `LeastBytes`), which steers load away from slow partitions.
    LeastBytes,
    /// Unkeyed records cycle through the partitions in turn.
    RoundRobin,
    /// Keyed records are hashed (as under every balancer); unkeyed records cycle in turn.
    /// Choose it to say that the key decides.
    Hash,
    /// Your own.
    Custom(Box<dyn Balance>),
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Balancer::LeastBytes => "LeastBytes",
            Balancer::RoundRobin => "RoundRobin",
            Balancer::Hash => "Hash",
            Balancer::Custom(_) => "Custom",
        })
    }
}

impl Default for Balancer {
    /// [`Balancer::LeastBytes`], as in the Go design.
    fn default() -> Self {
        Balancer::LeastBytes
    }
}

impl std::str::FromStr for Balancer {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "least-bytes" => Ok(Balancer::LeastBytes),
            "round-robin" => Ok(Balancer::RoundRobin),
            "hash" => Ok(Balancer::Hash),
            other => Err(format!(
                "unknown balancer {other:?}; use least-bytes, round-robin or hash"
            )),
        }
    }
}

/// The Java client's murmur2 (seed 0x9747b28c), as in `org.apache.kafka.common.utils.Utils`.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        if rest.len() >= 3 {
            h ^= u32::from(rest[2]) << 16;
        }
        if rest.len() >= 2 {
            h ^= u32::from(rest[1]) << 8;
        }
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client's default partitioner picks for `key`.
pub fn java_partition(key: &[u8], partitions: usize) -> usize {
    ((murmur2(key) & 0x7fff_ffff) as usize) % partitions
}

/// A [`Balancer`] with its running state.
pub(crate) struct Chooser {
    balancer: Balancer,
    next: usize,
}

impl Chooser {
    pub(crate) fn new(balancer: Balancer) -> Self {
        Chooser { balancer, next: 0 }
    }

    pub(crate) fn choose(
        &mut self,
        topic: &str,
        key: Option<&[u8]>,
        pending_bytes: &[u64],
    ) -> usize {
        let n = pending_bytes.len();
        debug_assert!(n > 0);
        if let Balancer::Custom(custom) = &mut self.balancer {
            // A custom balancer's answer is clamped rather than trusted.
            return custom.partition(topic, key, pending_bytes) % n;
        }
        if let Some(key) = key {
            return java_partition(key, n);
        }
        match self.balancer {
            Balancer::LeastBytes => {
                // Ties rotate so that an idle topic still spreads.
                self.next = self.next.wrapping_add(1);
                let start = self.next % n;
                (0..n)
                    .map(|i| (start + i) % n)
                    .min_by_key(|&p| pending_bytes[p])
                    .unwrap_or(0)
            }
            _ => {
                let p = self.next % n;
                self.next = self.next.wrapping_add(1);
                p
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_known_java_values() {
        // Utils.murmur2 from the kafka-clients jar (tests/murmur2.rs checks many more keys).
        assert_eq!(murmur2(b"kpipe"), 456449577);
        assert_eq!(murmur2(b""), 275646681);
    }

    #[test]
    fn keys_always_hash_whatever_the_balancer() {
        for b in [Balancer::LeastBytes, Balancer::RoundRobin, Balancer::Hash] {
            let mut c = Chooser::new(b);
            let loads = [0, 1_000_000, 5, 9];
            let first = c.choose("t", Some(b"device-7"), &loads);
            for _ in 0..10 {
                assert_eq!(c.choose("t", Some(b"device-7"), &loads), first);
            }
            assert_eq!(first, java_partition(b"device-7", 4));
        }
    }

    #[test]
    fn round_robin_cycles_and_least_bytes_avoids_the_loaded() {
        let mut rr = Chooser::new(Balancer::RoundRobin);
        let picks: Vec<_> = (0..6).map(|_| rr.choose("t", None, &[0, 0, 0])).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let mut lb = Chooser::new(Balancer::LeastBytes);
        for _ in 0..10 {
            assert_eq!(lb.choose("t", None, &[500, 20, 900]), 1);
        }
        let spread: std::collections::HashSet<_> =
            (0..3).map(|_| lb.choose("t", None, &[0, 0, 0])).collect();
        assert_eq!(spread.len(), 3, "ties rotate");
    }

    #[test]
    fn custom_balancers_are_clamped() {
        struct Wild;
        impl Balance for Wild {
            fn partition(&mut self, _: &str, _: Option<&[u8]>, _: &[u64]) -> usize {
                17
            }
        }
        let mut c = Chooser::new(Balancer::Custom(Box::new(Wild)));
        assert_eq!(c.choose("t", Some(b"k"), &[0; 5]), 2);
    }
}
