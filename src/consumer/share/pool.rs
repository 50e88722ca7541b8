//! A [`ConsumerPool`] of share members: each thread fetches, hands its records to the
//! handler one by one and acknowledges each by the handler's answer.
//!
//! ```text
//!  kpipe-consumer-i: fetch (carrying the last acknowledgements) ─▶ handler, record by record
//!       ─▶ Ok: accept · Err / panic: release or reject (OnShareError)
//!       between records: the lock of the records still waiting renewed when it runs low
//!  kpipe-group-i:   ShareGroupHeartbeat (also while the handler runs)
//! ```

use std::fmt::Display;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::connect::Connector;
use crate::client::{AckKind, Cluster};
use crate::sync::Locked;

use super::super::config::{ConsumerConfig, OffsetReset, OnShareError};
use super::super::engine::connect_checked;
use super::super::error::Error;
use super::super::pool::{guarded, ConsumerPool};
use super::super::record::ConsumedRecord;
use super::super::shared::Shared;
use super::engine::ShareEngine;

/// Connect, check the topics, and set the group's starting point if asked.
pub(crate) fn prepare(config: &ConsumerConfig) -> Result<Cluster, Error> {
    let mut cluster = connect_checked(config)?;
    if let Some(reset) = config.share_auto_offset_reset {
        let value = match reset {
            OffsetReset::Earliest => "earliest",
            _ => "latest",
        };
        let timeout = config.client.connection.request_timeout;
        cluster.alter_group_config(
            &config.group,
            &[("share.auto.offset.reset", value)],
            timeout,
        )?;
        log::info!(
            "share group {:?}: share.auto.offset.reset set to {value}",
            config.group
        );
    }
    Ok(cluster)
}

/// Start `config.threads` share members, member 0 here (so that a cluster without share
/// groups is an error now), each with the handler `make_handler(i)` makes.
pub(crate) fn launch<F, H, E>(
    config: ConsumerConfig,
    make_handler: F,
) -> Result<ConsumerPool, Error>
where
    F: Fn(usize) -> H,
    H: FnMut(&ConsumedRecord) -> Result<(), E> + Send + 'static,
    E: Display,
{
    let cluster = prepare(&config)?;
    let connector = cluster.connector().clone();
    let shared = Arc::new(Shared::new(config.shutdown.clone()));
    let first = ShareEngine::start(0, config.clone(), cluster, shared.clone())?;
    let mut first = Some(first);
    ConsumerPool::assemble(shared.clone(), config.threads, |i, close_deadline| {
        let mut handler = make_handler(i);
        let start = first.take().ok_or_else(|| connector.clone());
        let member = ShareMember {
            idx: i,
            config: config.clone(),
            shared: shared.clone(),
            close_deadline,
        };
        move || member.run(start, &mut handler)
    })
}

struct ShareMember {
    idx: usize,
    config: ConsumerConfig,
    shared: Arc<Shared>,
    close_deadline: Arc<std::sync::Mutex<Option<Instant>>>,
}

impl ShareMember {
    fn run<H, E>(self, start: Result<ShareEngine, Connector>, handler: &mut H)
    where
        H: FnMut(&ConsumedRecord) -> Result<(), E>,
        E: Display,
    {
        let mut engine = match start {
            Ok(e) => e,
            Err(connector) => match self.connect(connector) {
                Some(e) => e,
                None => return,
            },
        };
        if let Err(e) = self.work(&mut engine, handler) {
            log::error!("share member {}: {e}", self.idx);
            self.shared.stop_pool(e.to_string());
        }
        let deadline = self
            .close_deadline
            .locked()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(30));
        // Records handed out and not handled (the pool stopped mid-batch): released.
        if let Err(e) = engine.close(AckKind::Release, deadline) {
            log::warn!("share member {}: closing: {e}", self.idx);
        }
    }

    fn connect(&self, connector: Connector) -> Option<ShareEngine> {
        let mut backoff = self.config.client.backoff();
        loop {
            let attempt = Cluster::connect_with(self.config.client.clone(), connector.clone())
                .map_err(Error::from)
                .and_then(|cluster| {
                    ShareEngine::start(self.idx, self.config.clone(), cluster, self.shared.clone())
                });
            match attempt {
                Ok(e) => return Some(e),
                Err(Error::Client(e)) if e.is_retriable() => {
                    log::warn!("share member {}: connecting: {e}", self.idx);
                    if self.shared.stopping() {
                        return None;
                    }
                    std::thread::sleep(backoff.next_delay());
                }
                Err(e) => {
                    self.shared
                        .stop_pool(format!("share member {}: connecting: {e}", self.idx));
                    return None;
                }
            }
        }
    }

    fn work<H, E>(&self, engine: &mut ShareEngine, handler: &mut H) -> Result<(), Error>
    where
        H: FnMut(&ConsumedRecord) -> Result<(), E>,
        E: Display,
    {
        let max = self.config.max_poll_records;
        let mut records = Vec::with_capacity(max);
        let mut next_renewal = Instant::now();
        let far = Duration::from_secs(3600);
        while !self.shared.stopping() {
            records.clear();
            engine.poll_into(&mut records, max, Duration::from_millis(100))?;
            let mut handled = 0;
            // When to look at the locks again: half a lock before the first runs out (one
            // scan of the books per fetch, not per record).
            let mut check_at = self.renew_at(engine, far);
            for rec in records.drain(..) {
                if self.shared.stopping() {
                    break; // the rest is released on close
                }
                let now = Instant::now();
                if now >= check_at && now >= next_renewal {
                    self.keep_locks(engine)?;
                    // At most four tries a lock: a renewal the broker refuses (or cannot
                    // make) is not asked again for every record.
                    next_renewal = Instant::now() + engine.lock() / 4;
                    check_at = self.renew_at(engine, far).max(next_renewal);
                }
                self.shared.handed_out.add(1);
                let kind = match guarded(&self.shared, || handler(&rec)) {
                    Ok(()) => {
                        handled += 1;
                        AckKind::Accept
                    }
                    Err(err) => self.failed(&rec, &err),
                };
                engine.acknowledge(&rec.topic, rec.partition, rec.offset, kind)?;
                engine.note_progress();
            }
            self.shared.handled.add(handled);
        }
        Ok(())
    }

    /// When the records still waiting should have their locks renewed: half a lock before
    /// the first runs out (`far` from now when none waits).
    fn renew_at(&self, engine: &ShareEngine, far: Duration) -> Instant {
        match engine.first_deadline() {
            Some(d) => d.checked_sub(engine.lock() / 2).unwrap_or(d),
            None => Instant::now() + far,
        }
    }

    /// Before the next record: renew the locks of the records still waiting (brokers that
    /// cannot, Kafka 4.1, or groups that refuse, are left to redeliver them; their
    /// acknowledgements then fail, counted and logged).
    fn keep_locks(&self, engine: &mut ShareEngine) -> Result<(), Error> {
        if !engine.can_renew() {
            return Ok(());
        }
        let renewing = engine.acknowledge_all(AckKind::Renew, false);
        log::debug!(
            "share member {}: renewing the lock of {renewing} record(s)",
            self.idx
        );
        let deadline = Instant::now() + self.config.client.connection.request_timeout;
        engine.flush(deadline)
    }

    /// The acknowledgement of a record the handler failed on, by the policy.
    fn failed(&self, rec: &ConsumedRecord, err: &str) -> AckKind {
        self.shared.handler_errors.add(1);
        let at = format!("{}-{}@{}", rec.topic, rec.partition, rec.offset);
        let delivery = rec.delivery_count.unwrap_or(1);
        let kind = match self.config.on_share_error {
            OnShareError::Release => AckKind::Release,
            OnShareError::RejectAfter(n) if delivery >= n => AckKind::Reject,
            OnShareError::RejectAfter(_) => AckKind::Release,
            OnShareError::Reject => AckKind::Reject,
            OnShareError::Stop => {
                self.shared
                    .stop_pool(format!("the handler failed on {at}: {err}"));
                AckKind::Release
            }
        };
        let what = if kind == AckKind::Reject {
            "rejected"
        } else {
            "released"
        };
        log::warn!(
            "share member {}: handler failed on {at} (delivery {delivery}), {what}: {err}",
            self.idx
        );
        kind
    }
}
