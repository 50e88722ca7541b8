//! What goes down the channel from the handles to the writer thread.

use super::delivery::Envelope;
use super::txn;

pub(crate) enum Msg {
    Record(Envelope),
    /// A transactional call, in order with the records.
    Txn(txn::TxnCall),
    /// Wakes the writer (close was called).
    Wake,
}
