//! Record batches, message format v2: building them for Produce and reading them from Fetch.
//!
//! kpipe writes this codec itself rather than going through `kafka_protocol::records`,
//! because that one keeps headers in a map (duplicate header keys, legal in Kafka, collapse),
//! needs an owned `Record` struct per record before encoding, fails on the truncated last
//! batch a fetch may end with, and pre-allocates from record counts read off the wire.
//! The tests check both directions against `kafka_protocol::records` as an oracle.
//!
//! ```text
//! batch:  baseOffset i64 | length i32 | leaderEpoch i32 | magic i8 = 2 | crc32c u32 |
//!         attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 |
//!         producerId i64 | producerEpoch i16 | baseSequence i32 | count i32 | records...
//! record: length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
//!         key varbytes | value varbytes | headers: count varint, (key varstr, value varbytes)*
//! ```

use bytes::Bytes;

use super::compression::{self, Compression};

/// Bytes in a v2 batch header, before the records.
pub(crate) const BATCH_HEADER_LEN: usize = 61;
/// Offset of the `length` field's end: `length` counts the bytes after it.
const LOG_OVERHEAD: usize = 12;
const CRC_START: usize = 21;

/// One record header. Keys need not be unique.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub key: String,
    /// Its value; `None` is a null value, distinct from an empty one.
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a value.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Header {
            key: key.into(),
            value: Some(value.into()),
        }
    }
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// The key; records with the same key go to the same partition under the hash balancer.
    pub key: Option<Bytes>,
    /// The value (payload); `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
}

/// A record read back from a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedRecord {
    /// Its offset in the partition.
    pub offset: i64,
    /// Milliseconds since the Unix epoch (create time, or log-append time if the topic says so).
    pub timestamp: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// Headers, in order, duplicates kept.
    pub headers: Vec<Header>,
}

/// Accumulates records for one partition, then writes them as one v2 batch.
#[derive(Debug, Clone, Default)]
pub struct BatchBuilder {
    body: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    transactional: bool,
}

impl BatchBuilder {
    /// An empty builder with room for `bytes` bytes of records.
    pub fn with_capacity(bytes: usize) -> Self {
        BatchBuilder {
            body: Vec::with_capacity(bytes),
            ..Default::default()
        }
    }

    /// Records appended so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether no record was appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The size of the batch if written uncompressed now.
    pub fn size(&self) -> usize {
        BATCH_HEADER_LEN + self.body.len()
    }

    /// Mark the batch as written inside a transaction (attribute bit 4), as a transactional
    /// producer's batches must be: read_committed readers drop it if the transaction aborts.
    pub fn set_transactional(&mut self, transactional: bool) {
        self.transactional = transactional;
    }

    /// Forget all records, keeping the buffer.
    pub fn clear(&mut self) {
        self.body.clear();
        self.count = 0;
    }

    /// Append one record; returns the bytes it takes in the batch.
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> usize {
        if self.count == 0 {
            self.base_timestamp = timestamp;
            self.max_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        let ts_delta = timestamp.wrapping_sub(self.base_timestamp);
        let offset_delta = self.count;
        let mut size = 1 + varlong_len(ts_delta) + varint_len(offset_delta as i64);
        size += bytes_len(key) + bytes_len(value) + varint_len(headers.len() as i64);
        for h in headers {
            size += bytes_len(Some(h.key.as_bytes())) + bytes_len(h.value.as_deref());
        }
        let before = self.body.len();
        let buf = &mut self.body;
        put_varint(buf, size as i64);
        buf.push(0); // record attributes: unused
        put_varint(buf, ts_delta);
        put_varint(buf, offset_delta as i64);
        put_bytes(buf, key);
        put_bytes(buf, value);
        put_varint(buf, headers.len() as i64);
        for h in headers {
            put_bytes(buf, Some(h.key.as_bytes()));
            put_bytes(buf, h.value.as_deref());
        }
        self.count += 1;
        self.body.len() - before
    }

    /// Append a [`Record`].
    pub fn push_record(&mut self, r: &Record) -> usize {
        self.push(
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            &r.headers,
        )
    }

    /// Write the batch (header, then the records compressed with `codec`) to the end of `out`.
    /// The base offset is 0: the broker assigns offsets.
    pub fn finish(&self, codec: Compression, out: &mut Vec<u8>) -> std::io::Result<()> {
        self.finish_as(codec, ProducerStamp::NONE, out)
    }

    /// Like [`finish`](Self::finish), for an idempotent producer: the batch carries its
    /// producer id, epoch and base sequence.
    pub fn finish_as(
        &self,
        codec: Compression,
        producer: ProducerStamp,
        out: &mut Vec<u8>,
    ) -> std::io::Result<()> {
        let start = out.len();
        out.extend_from_slice(&0i64.to_be_bytes()); // base offset
        out.extend_from_slice(&0i32.to_be_bytes()); // length, filled below
        out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        out.push(2); // magic
        out.extend_from_slice(&0u32.to_be_bytes()); // crc, filled below
        let txn = if self.transactional { TRANSACTIONAL } else { 0 };
        out.extend_from_slice(&(codec.attribute() | txn).to_be_bytes());
        out.extend_from_slice(&(self.count - 1).max(0).to_be_bytes()); // last offset delta
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
        out.extend_from_slice(&producer.id.to_be_bytes());
        out.extend_from_slice(&producer.epoch.to_be_bytes());
        out.extend_from_slice(&producer.base_sequence.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        compression::compress(codec, &self.body, out)?;
        let length = i32::try_from(out.len() - start - LOG_OVERHEAD)
            .map_err(|_| std::io::Error::other("record batch over 2 GiB"))?;
        out[start + 8..start + 12].copy_from_slice(&length.to_be_bytes());
        let crc = crc32c::crc32c(&out[start + CRC_START..]);
        out[start + 17..start + 21].copy_from_slice(&crc.to_be_bytes());
        Ok(())
    }
}

/// The producer fields of a batch header (KIP-98): who wrote it and its first sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    /// Producer id, -1 for none.
    pub id: i64,
    /// Producer epoch, -1 for none.
    pub epoch: i16,
    /// Sequence of the batch's first record, -1 for none.
    pub base_sequence: i32,
}

impl ProducerStamp {
    /// A batch from a producer without idempotence.
    pub const NONE: ProducerStamp = ProducerStamp {
        id: -1,
        epoch: -1,
        base_sequence: -1,
    };
}

/// A record batch's header, as [`Batches::headers`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of its first record.
    pub base_offset: i64,
    /// Records in it.
    pub records: i32,
    /// Who wrote it.
    pub producer: ProducerStamp,
}

/// Rewrite the producer fields of an encoded v2 batch (a renumbered retry) and its checksum.
pub(crate) fn restamp(batch: &mut [u8], producer: ProducerStamp) -> Result<(), String> {
    if batch.len() < BATCH_HEADER_LEN || batch[16] != 2 {
        return Err(format!(
            "not a v2 record batch ({} bytes, magic {:?})",
            batch.len(),
            batch.get(16)
        ));
    }
    batch[43..51].copy_from_slice(&producer.id.to_be_bytes());
    batch[51..53].copy_from_slice(&producer.epoch.to_be_bytes());
    batch[53..57].copy_from_slice(&producer.base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&batch[CRC_START..]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Encode `records` as one batch.
pub fn encode_batch(records: &[Record], codec: Compression) -> std::io::Result<Bytes> {
    let mut builder = BatchBuilder::default();
    for r in records {
        builder.push_record(r);
    }
    let mut out = Vec::with_capacity(builder.size());
    builder.finish(codec, &mut out)?;
    Ok(out.into())
}

/// What [`decode_batches`] found besides the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeInfo {
    /// The offset after the last complete batch seen (control batches included), which is
    /// where the next fetch should start; `None` if no complete batch was seen.
    pub next_offset: Option<i64>,
    /// Whether the data ended with an incomplete batch (normal: fetches cut at byte limits).
    pub truncated: bool,
    /// Complete batches seen.
    pub batches: usize,
}

/// Decode every complete v2 batch in `data`, appending records at or above `min_offset` to
/// `out`. Control batches are skipped, a truncated last batch ends decoding, and compressed
/// batches may expand to at most `max_decompressed` bytes each.
pub fn decode_batches(
    data: &Bytes,
    min_offset: i64,
    max_decompressed: usize,
    out: &mut Vec<FetchedRecord>,
) -> Result<DecodeInfo, String> {
    // Decoding in the same pass as the scan is measurably faster than scanning first (see
    // BENCHMARKS.md), and this is the eager path.
    let mut info = DecodeInfo::default();
    let all = Batches::new(data.clone(), min_offset, max_decompressed);
    let mut at = 0;
    while let Some(total) = all.complete_at(at, &mut info)? {
        let batch = data.slice(at..at + total);
        at += total;
        info.next_offset = Some(decode_one(&batch, min_offset, max_decompressed, out)?);
        info.batches += 1;
    }
    Ok(info)
}

/// One partition's fetched data, decoded a batch at a time: a compressed batch is expanded
/// only when its records are wanted, so a reader holds one expanded batch rather than a
/// whole fetch response's worth (which, for data that compresses 100 times, is hundreds of
/// megabytes).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Batches {
    data: Bytes,
    at: usize,
    min_offset: i64,
    max_decompressed: usize,
    /// Read committed: the aborted transactions whose records are dropped.
    aborted: Option<AbortFilter>,
    /// The partition leader epoch of the batch `next_batch` returned last, -1 before.
    last_epoch: i32,
    /// The offset after the batch `next_batch` read last (by its header), -1 before.
    last_end: i64,
}

/// A transaction that a read_committed fetch reported aborted: the records `producer_id`
/// wrote from `first_offset` up to its abort marker never happened for a reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    /// The producer that aborted.
    pub producer_id: i64,
    /// The first offset of its aborted transaction.
    pub first_offset: i64,
}

/// Drops the records of aborted transactions, as a read_committed reader must (the broker
/// stops at the last stable offset but does not filter). Walking the batches in order: a
/// reported transaction becomes *open* once a batch reaches its first offset; a
/// transactional batch of a producer with an open aborted transaction is dropped; that
/// producer's abort marker closes it. (The Java consumer's rule, in `CompletedFetch`.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct AbortFilter {
    /// Reported transactions not reached yet, latest first offset first (taken from the end).
    pending: Vec<AbortedTxn>,
    /// Producers inside an aborted transaction at this point of the log.
    open: Vec<i64>,
}

impl AbortFilter {
    fn new(mut reported: Vec<AbortedTxn>) -> Self {
        reported.sort_by_key(|t| std::cmp::Reverse(t.first_offset));
        AbortFilter {
            pending: reported,
            open: Vec::new(),
        }
    }

    /// Whether the batch `b` (complete, v2) is to be dropped; notes markers and the
    /// transactions it reaches.
    fn drops(&mut self, b: &Bytes, max_decompressed: usize) -> Result<bool, String> {
        let producer_id = be_i64(b, 43);
        if producer_id < 0 {
            return Ok(false);
        }
        let last_offset = be_i64(b, 0).wrapping_add(be_i32(b, 23) as i64);
        while let Some(t) = self
            .pending
            .last()
            .filter(|t| t.first_offset <= last_offset)
        {
            if !self.open.contains(&t.producer_id) {
                self.open.push(t.producer_id);
            }
            self.pending.pop();
        }
        let attributes = i16::from_be_bytes([b[21], b[22]]);
        if attributes & CONTROL != 0 {
            if control_type(b, max_decompressed)? == Some(ControlType::Abort) {
                self.open.retain(|&p| p != producer_id);
            }
            return Ok(false); // skipped as a control batch anyway
        }
        Ok(attributes & TRANSACTIONAL != 0 && self.open.contains(&producer_id))
    }
}

/// Batch attribute: written inside a transaction.
const TRANSACTIONAL: i16 = 1 << 4;
/// Batch attribute: a control batch (transaction markers), no data records.
const CONTROL: i16 = 1 << 5;

/// What a control record marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlType {
    Abort,
    Commit,
    /// Another kind (leader change, snapshots: KRaft's own), ignored.
    Other,
}

/// The type of the control batch `b`'s first record (its key: version i16, type i16).
fn control_type(b: &Bytes, max_decompressed: usize) -> Result<Option<ControlType>, String> {
    let base_offset = be_i64(b, 0);
    let attributes = i16::from_be_bytes([b[21], b[22]]);
    if be_i32(b, 57) <= 0 {
        return Ok(None);
    }
    let body = batch_body(b, attributes, base_offset, max_decompressed)?;
    let mut r = Reader { buf: &body, at: 0 };
    let rec = r
        .record(&body, base_offset, 0)
        .map_err(|e| format!("control batch at offset {base_offset}: record {e}"))?;
    let key = rec.key.unwrap_or_default();
    if key.len() < 4 {
        return Err(format!(
            "control batch at offset {base_offset} has a key of {} bytes, under 4",
            key.len()
        ));
    }
    Ok(Some(match i16::from_be_bytes([key[2], key[3]]) {
        0 => ControlType::Abort,
        1 => ControlType::Commit,
        _ => ControlType::Other,
    }))
}

impl Batches {
    /// Batches in `data`; records below `min_offset` are skipped, and a compressed batch
    /// may expand to at most `max_decompressed` bytes.
    pub fn new(data: Bytes, min_offset: i64, max_decompressed: usize) -> Self {
        Batches {
            data,
            at: 0,
            min_offset,
            max_decompressed,
            aborted: None,
            last_epoch: -1,
            last_end: -1,
        }
    }

    /// The offset after the batch [`next_batch`](Self::next_batch) read last, by its
    /// header, also when it failed (a corrupt batch: where reading past it would resume);
    /// `None` before the first or when the header's offsets make no sense.
    pub fn last_batch_end(&self) -> Option<i64> {
        (self.last_end >= 0).then_some(self.last_end)
    }

    /// The partition leader epoch of the batch [`next_batch`](Self::next_batch) returned
    /// last (the epoch of the leader that wrote it, KIP-101), `None` before the first or
    /// for a batch that predates epochs.
    pub fn last_leader_epoch(&self) -> Option<i32> {
        (self.last_epoch >= 0).then_some(self.last_epoch)
    }

    /// Read committed: drop the records of these aborted transactions (the list a
    /// read_committed Fetch returns with the partition). An empty list drops nothing.
    pub fn dropping_aborted(mut self, aborted: Vec<AbortedTxn>) -> Self {
        self.aborted = (!aborted.is_empty()).then(|| AbortFilter::new(aborted));
        self
    }

    /// Read the batch headers from here on without decoding them: where the next fetch
    /// starts, whether the data ends early, how many batches are complete. An impossible
    /// length is an error; checksums and contents are checked by
    /// [`next_batch`](Self::next_batch).
    pub fn scan(&self) -> Result<DecodeInfo, String> {
        let mut info = DecodeInfo::default();
        let mut at = self.at;
        while let Some(total) = self.complete_at(at, &mut info)? {
            let batch = &self.data[at..at + total];
            let base_offset = be_i64(batch, 0);
            let last_offset_delta = be_i32(batch, 23);
            info.next_offset = Some(
                base_offset
                    .wrapping_add(last_offset_delta as i64)
                    .wrapping_add(1),
            );
            info.batches += 1;
            at += total;
        }
        Ok(info)
    }

    /// The headers of the complete batches from here on, undecoded otherwise: where each
    /// starts, how many records it holds, and who wrote it (producer id, epoch, base
    /// sequence; -1 each for a producer without idempotence).
    pub fn headers(&self) -> Result<Vec<BatchHeader>, String> {
        let mut out = Vec::new();
        let mut at = self.at;
        while let Some(total) = self.complete_at(at, &mut DecodeInfo::default())? {
            let b = &self.data[at..at + total];
            out.push(BatchHeader {
                base_offset: be_i64(b, 0),
                records: be_i32(b, 57),
                producer: ProducerStamp {
                    id: be_i64(b, 43),
                    epoch: i16::from_be_bytes([b[51], b[52]]),
                    base_sequence: be_i32(b, 53),
                },
            });
            at += total;
        }
        Ok(out)
    }

    /// The length of the complete batch at `at`, or `None` at the end (noting a truncated
    /// batch in `info`).
    fn complete_at(&self, at: usize, info: &mut DecodeInfo) -> Result<Option<usize>, String> {
        let rest = &self.data[at..];
        if rest.is_empty() {
            return Ok(None);
        }
        // A fetch can end anywhere, even inside a batch's length field.
        if rest.len() < LOG_OVERHEAD {
            info.truncated = true;
            return Ok(None);
        }
        // At least BATCH_HEADER_LEN: the header fields can be read.
        let total = check_length(rest, at)?;
        if rest.len() < total {
            info.truncated = true;
            return Ok(None);
        }
        Ok(Some(total))
    }

    /// Decode the next complete batch, appending its records at or above the minimum
    /// offset to `out` (none for a control batch or an aborted transaction's). Returns the
    /// offset after the batch, or `None` when no complete batch is left.
    pub fn next_batch(&mut self, out: &mut Vec<FetchedRecord>) -> Result<Option<i64>, String> {
        let Some(total) = self.complete_at(self.at, &mut DecodeInfo::default())? else {
            return Ok(None);
        };
        let batch = self.data.slice(self.at..self.at + total);
        self.at += total;
        let (base, delta) = (be_i64(&batch, 0), be_i32(&batch, 23));
        self.last_end = if base >= 0 && delta >= 0 {
            base.saturating_add(delta as i64 + 1)
        } else {
            -1
        };
        check_batch(&batch)?;
        self.last_epoch = be_i32(&batch, 12);
        if let Some(filter) = &mut self.aborted {
            if filter.drops(&batch, self.max_decompressed)? {
                let next = be_i64(&batch, 0)
                    .wrapping_add(be_i32(&batch, 23) as i64)
                    .wrapping_add(1);
                return Ok(Some(next));
            }
        }
        decode_checked(&batch, self.min_offset, self.max_decompressed, out).map(Some)
    }

    /// Whether no complete batch is left.
    pub fn is_empty(&self) -> bool {
        !matches!(
            self.complete_at(self.at, &mut DecodeInfo::default()),
            Ok(Some(_))
        )
    }
}

/// The total size of the batch at the start of `rest` (at byte `at`), from its length field.
fn check_length(rest: &[u8], at: usize) -> Result<usize, String> {
    let length = i32::from_be_bytes(rest[8..12].try_into().expect("4 bytes"));
    if length < (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32 {
        return Err(format!(
            "batch at byte {at} has length {length}, below the v2 header size"
        ));
    }
    Ok(LOG_OVERHEAD + length as usize)
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Decode one complete batch; returns the offset after it.
fn decode_one(
    batch: &Bytes,
    min_offset: i64,
    max_decompressed: usize,
    out: &mut Vec<FetchedRecord>,
) -> Result<i64, String> {
    check_batch(batch)?;
    decode_checked(batch, min_offset, max_decompressed, out)
}

/// Check a complete batch's format version and checksum.
fn check_batch(batch: &[u8]) -> Result<(), String> {
    let base_offset = be_i64(batch, 0);
    let magic = batch[16] as i8;
    if magic != 2 {
        return Err(format!(
            "batch at offset {base_offset} has magic {magic}; only message format v2 is supported (Kafka 0.11+)"
        ));
    }
    let crc = u32::from_be_bytes(batch[17..21].try_into().expect("4 bytes"));
    let actual = crc32c::crc32c(&batch[CRC_START..]);
    if crc != actual {
        return Err(format!(
            "batch at offset {base_offset} is corrupt (crc {crc:#x}, computed {actual:#x})"
        ));
    }
    Ok(())
}

/// [`decode_one`] for a batch [`check_batch`] passed.
fn decode_checked(
    batch: &Bytes,
    min_offset: i64,
    max_decompressed: usize,
    out: &mut Vec<FetchedRecord>,
) -> Result<i64, String> {
    let base_offset = be_i64(batch, 0);
    let attributes = i16::from_be_bytes(batch[21..23].try_into().expect("2 bytes"));
    let last_offset_delta = be_i32(batch, 23);
    let base_timestamp = be_i64(batch, 27);
    let max_timestamp = be_i64(batch, 35);
    let count = be_i32(batch, 57);
    let next = base_offset
        .wrapping_add(last_offset_delta as i64)
        .wrapping_add(1);
    if attributes & CONTROL != 0 || count <= 0 {
        return Ok(next);
    }
    let log_append_time = attributes & (1 << 3) != 0;
    let body = batch_body(batch, attributes, base_offset, max_decompressed)?;
    // Every record takes at least 7 bytes: never trust the count beyond what the bytes hold.
    if count as usize > body.len() / 7 {
        return Err(format!(
            "batch at offset {base_offset} claims {count} records in {} bytes",
            body.len()
        ));
    }
    let mut r = Reader { buf: &body, at: 0 };
    for _ in 0..count {
        let rec = r
            .record(&body, base_offset, base_timestamp)
            .map_err(|e| format!("batch at offset {base_offset}: record {e}"))?;
        if rec.offset >= min_offset {
            out.push(FetchedRecord {
                timestamp: if log_append_time {
                    max_timestamp
                } else {
                    rec.timestamp
                },
                ..rec
            });
        }
    }
    Ok(next)
}

/// The records of the batch `batch`, decompressed (at most `max_decompressed` bytes).
fn batch_body(
    batch: &Bytes,
    attributes: i16,
    base_offset: i64,
    max_decompressed: usize,
) -> Result<Bytes, String> {
    let codec = Compression::from_attributes(attributes).ok_or_else(|| {
        format!(
            "batch at offset {base_offset} uses unknown compression {}",
            attributes & 7
        )
    })?;
    if codec == Compression::None {
        return Ok(batch.slice(BATCH_HEADER_LEN..));
    }
    compression::decompress(codec, &batch[BATCH_HEADER_LEN..], max_decompressed)
        .map(Bytes::from)
        .map_err(|e| format!("batch at offset {base_offset}: {codec} data {e}"))
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn varint(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..70).step_by(7) {
            let byte = *self.buf.get(self.at).ok_or("varint runs past the end")?;
            self.at += 1;
            if shift == 63 && byte > 1 {
                return Err("varint overflows 64 bits".into());
            }
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn bytes(&mut self, whole: &Bytes, end: usize) -> Result<Option<Bytes>, String> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| "length overflows")?;
        if len > end.saturating_sub(self.at) {
            return Err(format!("field of {len} bytes runs past the record's end"));
        }
        let b = whole.slice(self.at..self.at + len);
        self.at += len;
        Ok(Some(b))
    }

    fn record(
        &mut self,
        whole: &Bytes,
        base_offset: i64,
        base_ts: i64,
    ) -> Result<FetchedRecord, String> {
        let size = self.varint()?;
        let size = usize::try_from(size).map_err(|_| format!("has negative size {size}"))?;
        let end = self.at.checked_add(size).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| format!("of {size} bytes runs past the batch's end"))?;
        self.at += 1; // attributes
        let ts_delta = self.varint()?;
        let offset_delta = self.varint()?;
        let key = self.bytes(whole, end)?;
        let value = self.bytes(whole, end)?;
        let n_headers = self.varint()?;
        if n_headers < 0 || n_headers as usize > end.saturating_sub(self.at) {
            return Err(format!("claims {n_headers} headers"));
        }
        let mut headers = Vec::with_capacity(n_headers as usize);
        for _ in 0..n_headers {
            let key = self.bytes(whole, end)?.ok_or("header with a null key")?;
            let value = self.bytes(whole, end)?;
            headers.push(Header {
                key: String::from_utf8_lossy(&key).into_owned(),
                value,
            });
        }
        if self.at != end {
            return Err(format!("size {size} disagrees with its fields"));
        }
        Ok(FetchedRecord {
            offset: base_offset.wrapping_add(offset_delta),
            timestamp: base_ts.wrapping_add(ts_delta),
            key,
            value,
            headers,
        })
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn varlong_len(v: i64) -> usize {
    let bits = 64 - zigzag(v).leading_zeros() as usize;
    bits.max(1).div_ceil(7)
}

fn varint_len(v: i64) -> usize {
    varlong_len(v)
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        None => 1,
        Some(b) => varint_len(b.len() as i64) + b.len(),
    }
}

fn put_varint(buf: &mut Vec<u8>, v: i64) {
    let mut z = zigzag(v);
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

fn put_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records as oracle;

    fn sample(n: usize) -> Vec<Record> {
        (0..n)
            .map(|i| Record {
                key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
                value: (i % 7 != 0).then(|| Bytes::from(vec![i as u8; i % 300])),
                headers: (0..i % 3)
                    .map(|h| Header {
                        key: format!("h{h}"),
                        value: (h != 1).then(|| Bytes::from(format!("v{i}"))),
                    })
                    .collect(),
                timestamp: 1_700_000_000_000 + (i as i64 * 37) % 1000 - 500,
            })
            .collect()
    }

    fn decode_all(data: &Bytes, min_offset: i64) -> (Vec<FetchedRecord>, DecodeInfo) {
        let mut out = Vec::new();
        let info = decode_batches(data, min_offset, 1 << 30, &mut out).unwrap();
        (out, info)
    }

    #[test]
    #[cfg_attr(
        not(all(
            feature = "gzip",
            feature = "snappy",
            feature = "lz4",
            feature = "zstd"
        )),
        ignore = "needs every codec feature"
    )]
    fn round_trips_with_every_codec() {
        let records = sample(500);
        for codec in Compression::ALL {
            let data = encode_batch(&records, codec).unwrap();
            let (got, info) = decode_all(&data, 0);
            assert_eq!(info.next_offset, Some(500));
            assert!(!info.truncated);
            assert_eq!(got.len(), records.len(), "{codec}");
            for (i, (r, g)) in records.iter().zip(&got).enumerate() {
                assert_eq!(g.offset, i as i64);
                assert_eq!(
                    (&g.key, &g.value, &g.headers, g.timestamp),
                    (&r.key, &r.value, &r.headers, r.timestamp)
                );
            }
        }
    }

    #[test]
    #[cfg_attr(
        not(all(
            feature = "gzip",
            feature = "snappy",
            feature = "lz4",
            feature = "zstd"
        )),
        ignore = "needs every codec feature"
    )]
    fn the_oracle_reads_what_we_write() {
        let records = sample(200);
        for codec in Compression::ALL {
            let mut data = encode_batch(&records, codec).unwrap();
            let set = oracle::RecordBatchDecoder::decode(&mut data).unwrap();
            assert_eq!(set.records.len(), 200, "{codec}");
            for (r, o) in records.iter().zip(&set.records) {
                assert_eq!(
                    (&o.key, &o.value, o.timestamp),
                    (&r.key, &r.value, r.timestamp)
                );
                let theirs: Vec<_> = o
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect();
                let ours: Vec<_> = r
                    .headers
                    .iter()
                    .map(|h| (h.key.clone(), h.value.clone()))
                    .collect();
                assert_eq!(theirs, ours);
            }
        }
    }

    #[test]
    #[cfg_attr(
        not(all(
            feature = "gzip",
            feature = "snappy",
            feature = "lz4",
            feature = "zstd"
        )),
        ignore = "needs every codec feature"
    )]
    fn the_oracle_reads_producer_fields_and_a_restamp() {
        let records = sample(20);
        let mut builder = BatchBuilder::default();
        for r in &records {
            builder.push_record(r);
        }
        for codec in [Compression::None, Compression::Lz4] {
            let stamp = ProducerStamp {
                id: 4242,
                epoch: 3,
                base_sequence: 100,
            };
            let mut buf = Vec::new();
            builder.finish_as(codec, stamp, &mut buf).unwrap();
            let set = oracle::RecordBatchDecoder::decode(&mut Bytes::from(buf.clone())).unwrap();
            let seqs: Vec<i32> = set.records.iter().map(|r| r.sequence).collect();
            assert_eq!(seqs, (100..120).collect::<Vec<_>>(), "{codec}");
            assert!(set
                .records
                .iter()
                .all(|r| (r.producer_id, r.producer_epoch) == (4242, 3)));
            // Renumbered in place: the checksum still holds (our decoder checks it).
            let again = ProducerStamp {
                epoch: 4,
                base_sequence: 0,
                ..stamp
            };
            restamp(&mut buf, again).unwrap();
            assert_eq!(decode_all(&Bytes::from(buf.clone()), 0).0.len(), 20);
            let mut bad = buf.clone();
            bad[53] ^= 1; // a sequence changed without its checksum
            let mut out = Vec::new();
            assert!(decode_batches(&Bytes::from(bad), 0, 1 << 30, &mut out).is_err());
            let set = oracle::RecordBatchDecoder::decode(&mut Bytes::from(buf)).unwrap();
            assert_eq!(set.records[0].sequence, 0);
            assert_eq!(set.records[19].sequence, 19);
            assert!(set.records.iter().all(|r| r.producer_epoch == 4));
        }
        assert!(restamp(&mut [0u8; 10], ProducerStamp::NONE).is_err());
        let mut two = Vec::new();
        builder.finish(Compression::None, &mut two).unwrap();
        let stamp = ProducerStamp {
            id: 9,
            epoch: 1,
            base_sequence: 20,
        };
        builder
            .finish_as(Compression::Zstd, stamp, &mut two)
            .unwrap();
        let headers = Batches::new(Bytes::from(two), 0, 1 << 30)
            .headers()
            .unwrap();
        let got: Vec<_> = headers.iter().map(|h| (h.records, h.producer)).collect();
        assert_eq!(got, [(20, ProducerStamp::NONE), (20, stamp)]);
    }

    #[test]
    #[cfg_attr(
        not(all(
            feature = "gzip",
            feature = "snappy",
            feature = "lz4",
            feature = "zstd"
        )),
        ignore = "needs every codec feature"
    )]
    fn we_read_what_the_oracle_writes() {
        let records: Vec<oracle::Record> = (0..100)
            .map(|i| oracle::Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: oracle::TimestampType::Creation,
                offset: 40 + i,
                sequence: -1 + (40 + i) as i32,
                timestamp: 1000 + i,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("v{i}"))),
                headers: IndexMap::from([(
                    StrBytes::from_static_str("h"),
                    Some(Bytes::from_static(b"x")),
                )]),
            })
            .collect();
        for codec in [
            oracle::Compression::None,
            oracle::Compression::Gzip,
            oracle::Compression::Snappy,
            oracle::Compression::Lz4,
            oracle::Compression::Zstd,
        ] {
            let mut buf = bytes::BytesMut::new();
            let opts = oracle::RecordEncodeOptions {
                version: 2,
                compression: codec,
            };
            oracle::RecordBatchEncoder::encode(&mut buf, &records, &opts).unwrap();
            let (got, info) = decode_all(&buf.freeze(), 0);
            assert_eq!(got.len(), 100, "{codec:?}");
            assert_eq!(info.next_offset, Some(140));
            assert_eq!(got[7].offset, 47);
            assert_eq!(got[7].key.as_deref(), Some(&b"k7"[..]));
            assert_eq!(got[7].headers, vec![Header::new("h", "x")]);
        }
    }

    #[test]
    fn duplicate_header_keys_survive() {
        let r = Record {
            headers: vec![Header::new("a", "1"), Header::new("a", "2")],
            ..Default::default()
        };
        let (got, _) = decode_all(
            &encode_batch(std::slice::from_ref(&r), Compression::None).unwrap(),
            0,
        );
        assert_eq!(got[0].headers, r.headers);
    }

    #[test]
    #[cfg_attr(
        not(all(
            feature = "gzip",
            feature = "snappy",
            feature = "lz4",
            feature = "zstd"
        )),
        ignore = "needs every codec feature"
    )]
    fn truncated_last_batch_is_dropped_quietly() {
        let mut data = encode_batch(&sample(10), Compression::None)
            .unwrap()
            .to_vec();
        let second = encode_batch(&sample(10), Compression::Lz4).unwrap();
        data.extend_from_slice(&second[..second.len() - 5]);
        let (got, info) = decode_all(&Bytes::from(data.clone()), 0);
        assert_eq!(got.len(), 10);
        assert!(info.truncated);
        assert_eq!(info.batches, 1);
        // Cut inside the length prefix too.
        data.truncate(data.len() - second.len() + 5 + 7);
        let (got, info) = decode_all(&Bytes::from(data), 0);
        assert_eq!((got.len(), info.truncated), (10, true));
    }

    #[test]
    #[cfg_attr(
        not(all(
            feature = "gzip",
            feature = "snappy",
            feature = "lz4",
            feature = "zstd"
        )),
        ignore = "needs every codec feature"
    )]
    fn records_below_the_requested_offset_are_dropped() {
        let (got, info) = decode_all(&encode_batch(&sample(10), Compression::Zstd).unwrap(), 6);
        assert_eq!(
            got.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [6, 7, 8, 9]
        );
        assert_eq!(info.next_offset, Some(10));
    }

    #[test]
    fn control_batches_are_skipped_but_advance_the_offset() {
        let mut data = encode_batch(&sample(3), Compression::None)
            .unwrap()
            .to_vec();
        data[0..8].copy_from_slice(&100i64.to_be_bytes());
        data[21..23].copy_from_slice(&(1i16 << 5).to_be_bytes());
        let crc = crc32c::crc32c(&data[21..]);
        data[17..21].copy_from_slice(&crc.to_be_bytes());
        let (got, info) = decode_all(&Bytes::from(data), 0);
        assert!(got.is_empty());
        assert_eq!(info.next_offset, Some(103));
    }

    #[test]
    fn corruption_is_an_error() {
        let mut data = encode_batch(&sample(3), Compression::None)
            .unwrap()
            .to_vec();
        let last = data.len() - 1;
        data[last] ^= 0xff;
        let mut out = Vec::new();
        let err = decode_batches(&Bytes::from(data.clone()), 0, 1 << 20, &mut out).unwrap_err();
        assert!(err.contains("corrupt"), "{err}");
        data[16] = 1;
        let err = decode_batches(&Bytes::from(data), 0, 1 << 20, &mut out).unwrap_err();
        assert!(err.contains("magic 1"), "{err}");
    }

    /// Batches of 10 records at offsets 0, 10, 20 (lz4, none, zstd), then a cut one.
    fn three_batches_and_a_cut() -> Vec<u8> {
        let mut data = Vec::new();
        let codecs = [Compression::Lz4, Compression::None, Compression::Zstd];
        for (i, codec) in codecs.into_iter().enumerate() {
            let mut b = encode_batch(&sample(10), codec).unwrap().to_vec();
            // The base offset is outside the checksum.
            b[0..8].copy_from_slice(&(i as i64 * 10).to_be_bytes());
            data.extend_from_slice(&b);
        }
        let cut = encode_batch(&sample(10), Compression::None).unwrap();
        data.extend_from_slice(&cut[..30]);
        data
    }

    #[test]
    #[cfg_attr(
        not(all(
            feature = "gzip",
            feature = "snappy",
            feature = "lz4",
            feature = "zstd"
        )),
        ignore = "needs every codec feature"
    )]
    fn batches_decode_one_at_a_time_what_decode_batches_decodes_at_once() {
        let data = Bytes::from(three_batches_and_a_cut());
        let (all, info) = decode_all(&data, 5);
        assert_eq!(
            (info.next_offset, info.truncated, info.batches),
            (Some(30), true, 3)
        );
        let mut batches = Batches::new(data, 5, 1 << 30);
        assert_eq!(batches.scan().unwrap(), info);
        let (mut sizes, mut got) = (Vec::new(), Vec::new());
        while !batches.is_empty() {
            let mut one = Vec::new();
            assert!(batches.next_batch(&mut one).unwrap().is_some());
            sizes.push(one.len());
            got.extend(one);
            // What is left scans to the same end.
            assert_eq!(
                batches.scan().unwrap().next_offset,
                info.next_offset.filter(|_| !batches.is_empty())
            );
        }
        assert!(
            batches.next_batch(&mut got).unwrap().is_none(),
            "the cut batch is not decoded"
        );
        assert_eq!(sizes, [5, 10, 10], "offsets below 5 are skipped");
        assert_eq!(got, all);
    }

    #[test]
    #[cfg_attr(
        not(all(
            feature = "gzip",
            feature = "snappy",
            feature = "lz4",
            feature = "zstd"
        )),
        ignore = "needs every codec feature"
    )]
    fn a_corrupt_batch_fails_when_its_turn_comes() {
        let mut data = three_batches_and_a_cut();
        let second_end = 2 * data.len() / 3; // inside the second or third batch's body
        data[second_end] ^= 0xff;
        let mut batches = Batches::new(Bytes::from(data), 0, 1 << 30);
        // Headers are intact: the scan, which reads no contents, finds no fault.
        assert_eq!(batches.scan().unwrap().batches, 3);
        let mut out = Vec::new();
        let mut result = Ok(Some(0));
        while let Ok(Some(_)) = result {
            result = batches.next_batch(&mut out);
        }
        let err = result.unwrap_err();
        assert!(
            err.contains("corrupt") || err.contains("lz4") || err.contains("zstd"),
            "{err}"
        );
        assert!(
            out.len() >= 10,
            "the batches before it were decoded: {}",
            out.len()
        );
    }

    #[test]
    fn a_lying_record_count_is_rejected_without_allocating() {
        let mut data = encode_batch(&sample(2), Compression::None)
            .unwrap()
            .to_vec();
        data[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&data[21..]);
        data[17..21].copy_from_slice(&crc.to_be_bytes());
        let mut out = Vec::new();
        let err = decode_batches(&Bytes::from(data), 0, 1 << 20, &mut out).unwrap_err();
        assert!(err.contains("claims 2147483647 records"), "{err}");
    }

    #[test]
    fn varints_match_the_zigzag_spec() {
        for (v, bytes) in [
            (0i64, vec![0u8]),
            (-1, vec![1]),
            (1, vec![2]),
            (63, vec![126]),
            (-64, vec![127]),
            (64, vec![128, 1]),
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf, bytes, "{v}");
            assert_eq!(varlong_len(v), bytes.len());
            assert_eq!(Reader { buf: &buf, at: 0 }.varint().unwrap(), v);
        }
        for v in [i64::MIN, i64::MAX, i32::MIN as i64, 300, -300] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(varlong_len(v), buf.len());
            assert_eq!(Reader { buf: &buf, at: 0 }.varint().unwrap(), v);
        }
    }

    // -----------------------------------------------------------------------------------
    // Read committed: the abort filter
    // -----------------------------------------------------------------------------------

    /// A batch of `n` records at `base`, written by producer `pid` (-1: none), transactional
    /// or not; values are `"{tag}-{offset}"`.
    fn batch_at(
        base: i64,
        pid: i64,
        n: usize,
        txn: bool,
        tag: &str,
        codec: Compression,
    ) -> Vec<u8> {
        let mut b = BatchBuilder::default();
        for i in 0..n {
            let v = format!("{tag}-{}", base + i as i64);
            b.push(1_000, None, Some(v.as_bytes()), &[]);
        }
        b.set_transactional(txn);
        let stamp = ProducerStamp {
            id: pid,
            epoch: if pid < 0 { -1 } else { 0 },
            base_sequence: if pid < 0 { -1 } else { 0 },
        };
        let mut out = Vec::new();
        b.finish_as(codec, stamp, &mut out).unwrap();
        out[0..8].copy_from_slice(&base.to_be_bytes()); // not covered by the checksum
        out
    }

    /// A transaction marker at `offset` for producer `pid`: commit or abort.
    fn marker(offset: i64, pid: i64, commit: bool) -> Vec<u8> {
        let mut b = BatchBuilder::default();
        let key = [0, 0, 0, commit as u8]; // version 0, type 0 abort / 1 commit
        b.push(1_000, Some(&key), Some(&[0, 0, 0, 0, 0, 7]), &[]);
        b.set_transactional(true);
        let stamp = ProducerStamp {
            id: pid,
            epoch: 0,
            base_sequence: -1,
        };
        let mut out = Vec::new();
        b.finish_as(Compression::None, stamp, &mut out).unwrap();
        out[0..8].copy_from_slice(&offset.to_be_bytes());
        let attributes = i16::from_be_bytes([out[21], out[22]]) | CONTROL;
        out[21..23].copy_from_slice(&attributes.to_be_bytes());
        let crc = crc32c::crc32c(&out[CRC_START..]);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    fn read(log: &[Vec<u8>], from: i64, aborted: Option<&[(i64, i64)]>) -> Vec<String> {
        let mut batches = Batches::new(Bytes::from(log.concat()), from, 1 << 20);
        if let Some(a) = aborted {
            let list = a.iter().map(|&(producer_id, first_offset)| AbortedTxn {
                producer_id,
                first_offset,
            });
            batches = batches.dropping_aborted(list.collect());
        }
        let mut out = Vec::new();
        let mut last = None;
        while let Some(next) = batches.next_batch(&mut out).unwrap() {
            assert!(last.is_none_or(|l| next > l), "offsets move forward");
            last = Some(next);
        }
        out.iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect()
    }

    fn tags(spec: &[(&str, std::ops::Range<i64>)]) -> Vec<String> {
        spec.iter()
            .flat_map(|(t, r)| r.clone().map(move |o| format!("{t}-{o}")))
            .collect()
    }

    /// Plain records, an aborted transaction of producer 7 interleaved with a committed one
    /// of producer 8, then a committed transaction of producer 7 again.
    fn interleaved(codec: Compression) -> Vec<Vec<u8>> {
        vec![
            batch_at(0, -1, 3, false, "plain", codec),
            batch_at(3, 7, 2, true, "abort", codec),
            batch_at(5, 8, 2, true, "commit", codec),
            batch_at(7, 7, 1, true, "abort", codec),
            marker(8, 8, true),
            batch_at(9, 5, 2, false, "idem", codec), // idempotent, not transactional
            marker(11, 7, false),
            batch_at(12, 7, 2, true, "commit", codec),
            marker(14, 7, true),
            batch_at(15, -1, 1, false, "plain", codec),
        ]
    }

    #[test]
    #[cfg_attr(
        not(all(
            feature = "gzip",
            feature = "snappy",
            feature = "lz4",
            feature = "zstd"
        )),
        ignore = "needs every codec feature"
    )]
    fn read_committed_drops_aborted_transactions_and_keeps_the_rest_in_order() {
        for codec in [Compression::None, Compression::Lz4] {
            let log = interleaved(codec);
            let committed = tags(&[
                ("plain", 0..3),
                ("commit", 5..7),
                ("idem", 9..11),
                ("commit", 12..14),
                ("plain", 15..16),
            ]);
            assert_eq!(read(&log, 0, Some(&[(7, 3)])), committed, "{codec}");
            // Read uncommitted: every data record, markers skipped.
            let all = tags(&[
                ("plain", 0..3),
                ("abort", 3..5),
                ("commit", 5..7),
                ("abort", 7..8),
                ("idem", 9..11),
                ("commit", 12..14),
                ("plain", 15..16),
            ]);
            assert_eq!(read(&log, 0, None), all, "{codec}");
            // An empty list (no aborted transaction in range) drops nothing.
            assert_eq!(read(&log, 0, Some(&[])), all, "{codec}");
        }
    }

    #[test]
    fn a_fetch_that_starts_inside_an_aborted_transaction_still_drops_it() {
        let log = interleaved(Compression::None);
        // The fetch begins at offset 5: the broker still lists the transaction from 3.
        let got = read(&log[2..], 5, Some(&[(7, 3)]));
        let want = tags(&[
            ("commit", 5..7),
            ("idem", 9..11),
            ("commit", 12..14),
            ("plain", 15..16),
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn one_producer_aborting_twice_around_a_commit() {
        let log = vec![
            batch_at(0, 7, 2, true, "abort", Compression::None),
            marker(2, 7, false),
            batch_at(3, 7, 2, true, "commit", Compression::None),
            marker(5, 7, true),
            batch_at(6, 7, 2, true, "abort", Compression::None),
            marker(8, 7, false),
            batch_at(9, -1, 1, false, "plain", Compression::None),
        ];
        let got = read(&log, 0, Some(&[(7, 6), (7, 0)]));
        assert_eq!(got, tags(&[("commit", 3..5), ("plain", 9..10)]));
    }

    #[test]
    fn a_non_transactional_batch_of_a_listed_producer_is_kept() {
        // Only batches marked transactional belong to a transaction.
        let log = vec![
            batch_at(0, 7, 2, false, "idem", Compression::None),
            batch_at(2, 7, 1, true, "abort", Compression::None),
            marker(3, 7, false),
        ];
        assert_eq!(read(&log, 0, Some(&[(7, 0)])), tags(&[("idem", 0..2)]));
    }

    #[test]
    fn a_corrupt_marker_is_an_error_not_a_silent_keep() {
        let mut m = marker(2, 7, false);
        let last = m.len() - 1;
        m[last] ^= 0x55;
        let log = [batch_at(0, 7, 2, true, "abort", Compression::None), m].concat();
        let mut batches =
            Batches::new(Bytes::from(log), 0, 1 << 20).dropping_aborted(vec![AbortedTxn {
                producer_id: 7,
                first_offset: 0,
            }]);
        let mut out = Vec::new();
        assert_eq!(batches.next_batch(&mut out).unwrap(), Some(2));
        let err = batches.next_batch(&mut out).unwrap_err();
        assert!(err.contains("corrupt"), "{err}");
        assert!(out.is_empty());
    }
}
