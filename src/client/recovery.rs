//! When a client goes back to its bootstrap servers (Java's `metadata.recovery.strategy`,
//! KIP-899 and KIP-1102): the decision alone, kept apart from the I/O in `cluster.rs`.
//!
//! ```text
//!   request to any broker ──► due? ── yes ─► rebootstrap: resolve the bootstrap servers
//!        │                     (REBOOTSTRAP_REQUIRED seen,       again, reload the broker
//!        │                      or no answer for the trigger)    list, then send there
//!        ▼ no
//!   known brokers, one by one (due? before each) ── all failed ─► rebootstrap
//!        │                                                        (None: the error)
//!        ▼ one answers
//!   answered: the clock stops
//! ```

use std::fmt;
use std::time::{Duration, Instant};

use super::config::MetadataRecovery;

/// Why a cluster goes back to its bootstrap servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// A broker answered REBOOTSTRAP_REQUIRED (KIP-1102).
    Required,
    /// No broker has answered for this long, at least the rebootstrap trigger (KIP-1102).
    Silent(Duration),
    /// Every known broker failed; none has answered for this long (KIP-899).
    AllFailed(Duration),
    /// No broker is known yet: the bootstrap servers are all there is.
    NoneKnown,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Required => f.write_str("a broker answered REBOOTSTRAP_REQUIRED"),
            Why::Silent(d) => write!(
                f,
                "no known broker answered for {:.1} s (the rebootstrap trigger)",
                d.as_secs_f64()
            ),
            Why::AllFailed(d) => {
                write!(f, "no known broker reachable for {:.1} s", d.as_secs_f64())
            }
            Why::NoneKnown => f.write_str("no broker known"),
        }
    }
}

/// What a cluster knows about its brokers' silence.
#[derive(Debug, Clone)]
pub(crate) struct Recovery {
    policy: MetadataRecovery,
    trigger: Duration,
    /// Since when no broker has answered: the start of the first request, since the last
    /// answer, that found none.
    unanswered_since: Option<Instant>,
    /// A broker said REBOOTSTRAP_REQUIRED, and no rebootstrap has happened since.
    required: bool,
    /// This silence was already reported at warn level.
    warned: bool,
}

impl Recovery {
    pub(crate) fn new(policy: MetadataRecovery, trigger: Duration) -> Self {
        Recovery {
            policy,
            trigger,
            unanswered_since: None,
            required: false,
            warned: false,
        }
    }

    /// A request to any broker begins.
    pub(crate) fn begin(&mut self, now: Instant) {
        self.unanswered_since.get_or_insert(now);
    }

    /// A broker answered: the clock stops.
    pub(crate) fn answered(&mut self) {
        self.unanswered_since = None;
        self.warned = false;
    }

    /// A broker answered REBOOTSTRAP_REQUIRED. Returns whether the policy lets the cluster
    /// act on it (otherwise the answer is an error for the caller).
    pub(crate) fn require(&mut self) -> bool {
        self.required = self.policy == MetadataRecovery::Rebootstrap;
        self.required
    }

    fn silent_for(&self, now: Instant) -> Duration {
        self.unanswered_since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t))
    }

    /// Whether to go to the bootstrap servers now, before trying (another) known broker.
    pub(crate) fn due(&self, now: Instant) -> Option<Why> {
        if self.policy != MetadataRecovery::Rebootstrap {
            return None;
        }
        if self.required {
            return Some(Why::Required);
        }
        let silent = self.silent_for(now);
        (self.unanswered_since.is_some() && silent >= self.trigger).then_some(Why::Silent(silent))
    }

    /// Every one of the `known` brokers failed: whether to go to the bootstrap servers.
    pub(crate) fn all_failed(&self, now: Instant, known: usize) -> Option<Why> {
        if known == 0 {
            return Some(Why::NoneKnown);
        }
        (self.policy == MetadataRecovery::Rebootstrap).then(|| Why::AllFailed(self.silent_for(now)))
    }

    /// The cluster goes back to the bootstrap servers. Returns whether to say so at warn
    /// level: once per silence, so that a cluster down for long does not fill the log.
    pub(crate) fn rebootstrapping(&mut self, why: Why) -> bool {
        self.required = false;
        let first = !self.warned && why != Why::NoneKnown;
        self.warned = true;
        first
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRIGGER: Duration = Duration::from_secs(300);

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn the_trigger_counts_from_the_first_request_without_an_answer() {
        let t0 = Instant::now();
        let mut r = Recovery::new(MetadataRecovery::Rebootstrap, TRIGGER);
        assert_eq!(r.due(at(t0, 1000)), None, "nothing asked yet");
        r.begin(t0);
        r.begin(at(t0, 100)); // a later request does not restart the clock
        assert_eq!(r.due(at(t0, 299)), None);
        assert_eq!(
            r.due(at(t0, 300)),
            Some(Why::Silent(Duration::from_secs(300)))
        );
        r.answered();
        assert_eq!(r.due(at(t0, 1000)), None, "an answer stops the clock");
        r.begin(at(t0, 1000));
        assert_eq!(
            r.due(at(t0, 1299)),
            None,
            "and the next silence starts afresh"
        );
    }

    #[test]
    fn rebootstrap_required_is_due_at_once_until_acted_on() {
        let t0 = Instant::now();
        let mut r = Recovery::new(MetadataRecovery::Rebootstrap, TRIGGER);
        r.begin(t0);
        r.answered(); // the answer that said it
        assert!(r.require());
        assert_eq!(r.due(t0), Some(Why::Required));
        assert!(r.rebootstrapping(Why::Required));
        assert_eq!(r.due(t0), None);
    }

    #[test]
    fn all_known_brokers_failing_sends_the_cluster_back_to_bootstrap() {
        let t0 = Instant::now();
        let mut r = Recovery::new(MetadataRecovery::Rebootstrap, TRIGGER);
        r.begin(t0);
        assert_eq!(
            r.all_failed(at(t0, 12), 3),
            Some(Why::AllFailed(Duration::from_secs(12)))
        );
        assert_eq!(r.all_failed(t0, 0), Some(Why::NoneKnown));
    }

    #[test]
    fn policy_none_never_rebootstraps() {
        let t0 = Instant::now();
        let mut r = Recovery::new(MetadataRecovery::None, TRIGGER);
        r.begin(t0);
        assert!(!r.require(), "REBOOTSTRAP_REQUIRED is the caller's error");
        assert_eq!(r.due(at(t0, 10_000)), None);
        assert_eq!(r.all_failed(at(t0, 10_000), 3), None);
        assert_eq!(
            r.all_failed(t0, 0),
            Some(Why::NoneKnown),
            "with no broker known the bootstrap servers are used whatever the policy"
        );
    }

    #[test]
    fn a_long_silence_is_reported_once() {
        let t0 = Instant::now();
        let mut r = Recovery::new(MetadataRecovery::Rebootstrap, TRIGGER);
        r.begin(t0);
        let why = Why::AllFailed(Duration::from_secs(1));
        assert!(r.rebootstrapping(why));
        assert!(!r.rebootstrapping(why));
        r.answered();
        r.begin(at(t0, 5));
        assert!(r.rebootstrapping(why), "a new silence is reported again");
        assert_eq!(
            why.to_string(),
            "no known broker reachable for 1.0 s",
            "the log line's words"
        );
    }
}
