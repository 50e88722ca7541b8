//! The record batch codecs Kafka knows, in the byte formats the Java client writes.

use std::fmt;
use std::io;
#[cfg(any(feature = "gzip", feature = "zstd"))]
use std::io::Read;
#[cfg(any(
    feature = "gzip",
    feature = "snappy",
    feature = "lz4",
    feature = "zstd"
))]
use std::io::Write;
use std::str::FromStr;

/// How a record batch's records are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Compression {
    /// No compression (the default, as in the Java client).
    #[default]
    None,
    /// gzip (deflate), default level.
    Gzip,
    /// Snappy in the xerial block framing the Java client writes.
    Snappy,
    /// LZ4 frame format, fast mode (see `../shared/KAFKA.md`: level 4 is LZ4HC and 3-4x slower).
    Lz4,
    /// Zstandard, level 3 (the Java client's default).
    Zstd,
}

impl Compression {
    /// Every codec, for tests and help texts.
    pub const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// The codec's id in the low three bits of the batch attributes.
    pub fn attribute(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec named by batch attributes, if known.
    pub fn from_attributes(attributes: i16) -> Option<Self> {
        Some(match attributes & 0x7 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => return None,
        })
    }

    /// Whether this build can write and read the codec: each but `None` is a cargo feature
    /// of kpipe's (`gzip`, `snappy`, `lz4`, `zstd`, all on by default).
    pub fn is_available(self) -> bool {
        match self {
            Compression::None => true,
            Compression::Gzip => cfg!(feature = "gzip"),
            Compression::Snappy => cfg!(feature = "snappy"),
            Compression::Lz4 => cfg!(feature = "lz4"),
            Compression::Zstd => cfg!(feature = "zstd"),
        }
    }

    /// Why the codec cannot be used, if this build lacks it: names the cargo feature to
    /// turn on.
    pub(crate) fn unavailable(self) -> Option<String> {
        (!self.is_available()).then(|| {
            format!(
                "{self} compression is not built in: enable kpipe's `{self}` cargo feature (on by default; `default-features = false` turns it off)"
            )
        })
    }

    /// The name used in flags and configs (`none`, `gzip`, `snappy`, `lz4`, `zstd`).
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown compression {s:?}; use one of none, gzip, snappy, lz4, zstd")
            })
    }
}

#[cfg(feature = "snappy")]
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
#[cfg(feature = "snappy")]
const XERIAL_BLOCK: usize = 32 * 1024;

fn unavailable(codec: Compression) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        codec.unavailable().unwrap_or_default(),
    )
}

/// Append `input` compressed with `codec` to `out`.
pub(crate) fn compress(codec: Compression, input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    match codec {
        Compression::None => out.extend_from_slice(input),
        #[cfg(feature = "gzip")]
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            enc.write_all(input)?;
            enc.finish()?;
        }
        #[cfg(feature = "snappy")]
        Compression::Snappy => {
            // xerial framing: magic, version 1, compatible version 1, then [len u32][block]...
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut enc = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK) {
                let at = out.len();
                out.extend_from_slice(&[0; 4]);
                out.resize(at + 4 + snap::raw::max_compress_len(block.len()), 0);
                let n = enc
                    .compress(block, &mut out[at + 4..])
                    .map_err(io::Error::other)?;
                out.truncate(at + 4 + n);
                out[at..at + 4].copy_from_slice(&(n as u32).to_be_bytes());
            }
        }
        #[cfg(feature = "lz4")]
        Compression::Lz4 => {
            // 64 KiB independent blocks, as the Java client writes: lz4_flex's automatic
            // block size picks up to 4 MiB for a large batch, and every reader then needs a
            // buffer that large per batch.
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            enc.write_all(input)?;
            enc.finish().map_err(io::Error::other)?;
        }
        #[cfg(feature = "zstd")]
        Compression::Zstd => {
            let mut enc = zstd::stream::write::Encoder::new(out, 3)?;
            enc.write_all(input)?;
            enc.finish()?;
        }
        // A codec this build lacks (unreachable with every codec built in).
        #[allow(unreachable_patterns)]
        _ => return Err(unavailable(codec)),
    }
    Ok(())
}

/// Decompress `input` (one batch's records section), refusing to produce more than `limit`
/// bytes so that a small hostile batch cannot expand without bound.
pub(crate) fn decompress(codec: Compression, input: &[u8], limit: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len().saturating_mul(4).min(limit));
    match codec {
        Compression::None => out.extend_from_slice(input),
        #[cfg(feature = "gzip")]
        Compression::Gzip => {
            read_bounded(flate2::read::MultiGzDecoder::new(input), limit, &mut out)?
        }
        #[cfg(feature = "snappy")]
        Compression::Snappy => decompress_snappy(input, limit, &mut out)?,
        #[cfg(feature = "lz4")]
        Compression::Lz4 => decompress_lz4_frame(input, limit, &mut out)?,
        #[cfg(feature = "zstd")]
        Compression::Zstd => {
            read_bounded(zstd::stream::read::Decoder::new(input)?, limit, &mut out)?
        }
        // A codec this build lacks (unreachable with every codec built in).
        #[allow(unreachable_patterns)]
        _ => return Err(unavailable(codec)),
    }
    Ok(out)
}

#[cfg(any(feature = "gzip", feature = "zstd"))]
fn read_bounded<R: Read>(reader: R, limit: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let read = reader.take(limit as u64 + 1).read_to_end(out)?;
    if read > limit {
        return Err(too_large(limit));
    }
    Ok(())
}

#[cfg(any(
    feature = "gzip",
    feature = "zstd",
    feature = "snappy",
    feature = "lz4"
))]
fn too_large(limit: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("decompresses to more than {limit} bytes"),
    )
}

#[cfg(feature = "snappy")]
fn decompress_snappy(input: &[u8], limit: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let mut dec = snap::raw::Decoder::new();
    let mut raw_block = |block: &[u8], out: &mut Vec<u8>| -> io::Result<()> {
        let n = snap::raw::decompress_len(block).map_err(io::Error::other)?;
        if out.len() + n > limit {
            return Err(too_large(limit));
        }
        let at = out.len();
        out.resize(at + n, 0);
        let written = dec
            .decompress(block, &mut out[at..])
            .map_err(io::Error::other)?;
        out.truncate(at + written);
        Ok(())
    };
    if !input.starts_with(XERIAL_MAGIC) {
        // Plain snappy (what some non-Java clients write).
        return raw_block(input, out);
    }
    let mut rest = input
        .get(16..)
        .ok_or_else(|| truncated("xerial snappy header"))?;
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .ok_or_else(|| truncated("xerial snappy block length"))?;
        let len = u32::from_be_bytes(len.try_into().expect("4 bytes")) as usize;
        let block = rest
            .get(4..4 + len)
            .ok_or_else(|| truncated("xerial snappy block"))?;
        raw_block(block, out)?;
        rest = &rest[4 + len..];
    }
    Ok(())
}

/// Decode an LZ4 frame block by block straight into `out` (no per-frame scratch buffers:
/// the streaming decoder allocated a buffer of the frame's block size per batch, up to
/// 4 MiB, which dominated fetches of compressed data).
#[cfg(feature = "lz4")]
fn decompress_lz4_frame(input: &[u8], limit: usize, out: &mut Vec<u8>) -> io::Result<()> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("lz4 frame: {what}"));
    if input.len() < 7 || input[..4] != [0x04, 0x22, 0x4d, 0x18] {
        return Err(bad("bad magic number"));
    }
    let flg = input[4];
    let bd = input[5];
    if flg >> 6 != 1 {
        return Err(bad("unsupported version"));
    }
    let independent = flg & 0x20 != 0;
    let block_checksums = flg & 0x10 != 0;
    let content_size = flg & 0x08 != 0;
    let dict_id = flg & 0x01 != 0;
    let block_max = match (bd >> 4) & 0x7 {
        4 => 64 << 10,
        5 => 256 << 10,
        6 => 1 << 20,
        7 => 4 << 20,
        _ => return Err(bad("unsupported block size")),
    };
    // Header: magic, FLG, BD, [content size], [dict id], header checksum.
    let mut at = 6 + if content_size { 8 } else { 0 } + if dict_id { 4 } else { 0 } + 1;
    let start = out.len();
    loop {
        let word = input
            .get(at..at + 4)
            .ok_or_else(|| truncated("lz4 block size"))?;
        at += 4;
        let word = u32::from_le_bytes(word.try_into().expect("4 bytes"));
        if word == 0 {
            return Ok(()); // end mark (a content checksum may follow; the batch CRC covers it)
        }
        let stored = word & 0x8000_0000 != 0;
        let len = (word & 0x7fff_ffff) as usize;
        let block = input
            .get(at..at + len)
            .ok_or_else(|| truncated("lz4 block"))?;
        at += len + if block_checksums { 4 } else { 0 };
        if stored {
            if out.len() - start + len > limit {
                return Err(too_large(limit));
            }
            out.extend_from_slice(block);
            continue;
        }
        if out.len() - start + block_max > limit + block_max {
            return Err(too_large(limit));
        }
        let at_out = out.len();
        out.resize(at_out + block_max, 0);
        let written = if independent || at_out == start {
            lz4_flex::block::decompress_into(block, &mut out[at_out..])
        } else {
            // Linked blocks may refer to the previous 64 KiB of output.
            let (before, after) = out.split_at_mut(at_out);
            let dict = &before[before.len().saturating_sub(64 << 10).max(start)..];
            lz4_flex::block::decompress_into_with_dict(block, after, dict)
        }
        .map_err(|e| bad(&e.to_string()))?;
        out.truncate(at_out + written);
        if out.len() - start > limit {
            return Err(too_large(limit));
        }
    }
}

#[cfg(any(feature = "snappy", feature = "lz4"))]
fn truncated(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("truncated {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_codec_round_trips() {
        let input: Vec<u8> = (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for codec in available() {
            let mut packed = Vec::new();
            compress(codec, &input, &mut packed).unwrap();
            if codec != Compression::None {
                assert!(packed.len() < input.len(), "{codec} did not compress");
            }
            assert_eq!(
                decompress(codec, &packed, 1 << 30).unwrap(),
                input,
                "{codec}"
            );
        }
    }

    #[test]
    fn decompression_is_bounded() {
        let input = vec![0u8; 1 << 20];
        for codec in available() {
            let mut packed = Vec::new();
            compress(codec, &input, &mut packed).unwrap();
            let err = decompress(codec, &packed, 1000);
            if codec == Compression::None {
                continue; // stored bytes are bounded by the frame itself
            }
            assert!(
                err.unwrap_err().to_string().contains("more than 1000"),
                "{codec}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for codec in available().skip(1) {
            assert!(decompress(
                codec,
                b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01\xff\xff\xff\xff",
                1 << 20
            )
            .is_err());
            assert!(
                decompress(codec, &[1, 2, 3, 4, 5], 1 << 20).is_err(),
                "{codec}"
            );
        }
    }

    fn available() -> impl Iterator<Item = Compression> {
        Compression::ALL.into_iter().filter(|c| c.is_available())
    }

    #[test]
    fn a_codec_left_out_is_an_error_naming_its_feature() {
        for codec in Compression::ALL.into_iter().filter(|c| !c.is_available()) {
            let err = compress(codec, b"x", &mut Vec::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{codec}` cargo feature")), "{err}");
            let err = decompress(codec, b"x", 100).unwrap_err().to_string();
            assert!(err.contains(&format!("`{codec}` cargo feature")), "{err}");
        }
        assert!(Compression::None.unavailable().is_none());
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn lz4_frames_of_every_shape_decode() {
        use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
        let input: Vec<u8> = (0..300_000u32)
            .flat_map(|i| ((i * 7) % 1000).to_le_bytes())
            .collect();
        for (size, mode) in [
            (BlockSize::Max64KB, BlockMode::Linked),
            (BlockSize::Max256KB, BlockMode::Independent),
            (BlockSize::Max4MB, BlockMode::Linked),
        ] {
            let info = FrameInfo::new()
                .block_size(size)
                .block_mode(mode)
                .block_checksums(true)
                .content_checksum(true);
            let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
            enc.write_all(&input).unwrap();
            let packed = enc.finish().unwrap();
            assert_eq!(
                decompress(Compression::Lz4, &packed, 1 << 30).unwrap(),
                input,
                "{size:?} {mode:?}"
            );
        }
        // Incompressible data is stored raw in blocks with the high bit set.
        let noise: Vec<u8> = (0..100_000u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        let mut packed = Vec::new();
        compress(Compression::Lz4, &noise, &mut packed).unwrap();
        assert_eq!(
            decompress(Compression::Lz4, &packed, 1 << 30).unwrap(),
            noise
        );
        // What we write uses 64 KiB blocks (BD byte 0x40), which every Kafka client reads.
        assert_eq!(packed[5], 0x40);
    }

    #[test]
    fn names_parse_and_print() {
        for codec in Compression::ALL {
            assert_eq!(codec.name().parse::<Compression>().unwrap(), codec);
            assert_eq!(Compression::from_attributes(codec.attribute()), Some(codec));
        }
        assert!("brotli".parse::<Compression>().unwrap_err().contains("lz4"));
    }
}
