//! What the benches share.

/// A telemetry-like JSON event padded with pseudo-random letters to `size` bytes: about as
/// compressible as real events (runs of one byte would flatter some codecs and punish
/// others). `devices` is how many distinct device ids the events cycle through.
pub fn telemetry_json(i: u64, size: usize, devices: u64) -> Vec<u8> {
    let mut v = format!(
        "{{\"device\":\"device-{}\",\"status\":\"healthy\",\"seq\":{i},\"pad\":\"",
        i % devices
    )
    .into_bytes();
    let mut x = (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    while v.len() < size.saturating_sub(2) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v.extend_from_slice(b"\"}");
    v.truncate(size);
    v
}
