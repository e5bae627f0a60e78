//! Decompressors for kernel images and archived BTFs, all pure Rust: gzip
//! (`flate2`/miniz_oxide), xz with the BCJ filters the kernel's `xz_wrap.sh` uses
//! (`xz4rust`), zstd (`ruzstd`), and LZ4 *legacy* frames.
//!
//! The kernel compresses its image with `lz4 -l` (legacy framing, Debian's choice):
//! the magic `02 21 4c 18`, then blocks, each a little-endian `u32` compressed size
//! and an LZ4 block that decompresses to at most 8 MiB; the kernel's build appends
//! the decompressed size as a `u32`. `lz4_flex` reads LZ4 blocks but not that
//! framing, so [`lz4_legacy`] does the framing.
//!
//! ```
//! use sonde::btf::decompress::{decompress, Compression};
//!
//! let text = b"hello, kernel";
//! let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
//! std::io::Write::write_all(&mut gz, text).unwrap();
//! let gz = gz.finish().unwrap();
//! assert_eq!(Compression::detect(&gz), Some(Compression::Gzip));
//! assert_eq!(decompress(Compression::Gzip, &gz).unwrap(), text);
//! ```

use std::io::Read;

/// Output larger than this is refused: a kernel decompresses to ~30-80 MB.
pub const MAX_OUTPUT: usize = 1 << 30;

/// The largest block of an LZ4 legacy frame, decompressed.
pub const LZ4_LEGACY_BLOCK: usize = 8 << 20;

const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];

/// Why a stream did not decompress.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error("{0}")]
    Read(#[from] std::io::Error),
    #[error("zstd: {0}")]
    Zstd(#[from] ruzstd::decoding::errors::FrameDecoderError),
    /// xz4rust's error, as its `Debug` names it.
    #[error("xz: {0}")]
    Xz(String),
    #[error("xz: truncated stream")]
    XzTruncated,
    #[error("not an lz4 legacy frame")]
    NotLz4Legacy,
    #[error("lz4 legacy frame without a block")]
    Lz4NoBlock,
    #[error("lz4 block 0: {0}")]
    Lz4FirstBlock(lz4_flex::block::DecompressError),
    #[error("decompresses to more than {MAX_OUTPUT} bytes")]
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    Lz4Legacy,
}

impl Compression {
    pub const ALL: [Compression; 4] = [
        Compression::Gzip,
        Compression::Xz,
        Compression::Zstd,
        Compression::Lz4Legacy,
    ];

    /// The bytes a stream of this format starts with.
    pub fn magic(self) -> &'static [u8] {
        match self {
            Compression::Gzip => &[0x1f, 0x8b, 0x08],
            Compression::Xz => &[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00],
            Compression::Zstd => &[0x28, 0xb5, 0x2f, 0xfd],
            Compression::Lz4Legacy => &LZ4_LEGACY_MAGIC,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Lz4Legacy => "lz4 legacy",
        }
    }

    /// The format `data` starts with, if any.
    pub fn detect(data: &[u8]) -> Option<Compression> {
        Compression::ALL
            .into_iter()
            .find(|c| data.starts_with(c.magic()))
    }
}

/// Decompresses one stream of `kind` at the start of `data`; bytes after the end of
/// the stream (the kernel's size trailer, the rest of an image) are ignored.
pub fn decompress(kind: Compression, data: &[u8]) -> Result<Vec<u8>, DecompressError> {
    match kind {
        Compression::Gzip => read_capped(flate2::read::GzDecoder::new(data)),
        Compression::Zstd => {
            let decoder = ruzstd::decoding::StreamingDecoder::new(data)?;
            read_capped(decoder)
        }
        Compression::Xz => xz(data),
        Compression::Lz4Legacy => lz4_legacy(data),
    }
}

fn read_capped(reader: impl Read) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    reader.take(MAX_OUTPUT as u64 + 1).read_to_end(&mut out)?;
    if out.len() > MAX_OUTPUT {
        return Err(DecompressError::TooLarge);
    }
    Ok(out)
}

/// One xz stream (any check but SHA-256; LZMA2 with or without a BCJ filter).
pub fn xz(data: &[u8]) -> Result<Vec<u8>, DecompressError> {
    const CHUNK: usize = 1 << 20;
    let mut decoder = xz4rust::XzDecoder::in_heap();
    let mut out: Vec<u8> = Vec::new();
    let mut at = 0;
    loop {
        let start = out.len();
        out.resize(start + CHUNK, 0);
        let result = decoder
            .decode(&data[at..], &mut out[start..])
            .map_err(|e| DecompressError::Xz(format!("{e:?}")))?;
        at += result.input_consumed();
        out.truncate(start + result.output_produced());
        if result.is_end_of_stream() {
            return Ok(out);
        }
        if out.len() > MAX_OUTPUT {
            return Err(DecompressError::TooLarge);
        }
        if !result.made_progress() {
            return Err(DecompressError::XzTruncated);
        }
    }
}

/// An LZ4 legacy frame (`lz4 -l`, the kernel's `LZ4` compression).
///
/// The frame has no end marker: it ends where the input does, or at a size field
/// that does not fit in what is left (the kernel's trailer, the decompressed size).
/// A concatenated frame's magic is skipped. A corrupt block after at least one good
/// one ends the frame (the data after a payload found by scanning is not LZ4); the
/// caller checks what it got.
pub fn lz4_legacy(data: &[u8]) -> Result<Vec<u8>, DecompressError> {
    let body = data
        .strip_prefix(&LZ4_LEGACY_MAGIC[..])
        .ok_or(DecompressError::NotLz4Legacy)?;
    let mut out: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut blocks = 0;
    while let Some(size) = body.get(at..at + 4) {
        let size = u32::from_le_bytes([size[0], size[1], size[2], size[3]]);
        if size.to_le_bytes() == LZ4_LEGACY_MAGIC {
            at += 4;
            continue;
        }
        let Some(block) = body.get(at + 4..at + 4 + size as usize) else {
            break;
        };
        // LZ4 expands at most ~255 times; do not zero 8 MiB for a small block.
        let room = LZ4_LEGACY_BLOCK.min(block.len().saturating_mul(255) + 64);
        let start = out.len();
        out.resize(start + room, 0);
        match lz4_flex::block::decompress_into(block, &mut out[start..]) {
            Ok(n) => out.truncate(start + n),
            Err(e) if blocks == 0 => return Err(DecompressError::Lz4FirstBlock(e)),
            Err(e) => {
                tracing::debug!(block = blocks, offset = at, error = %e, "lz4 legacy frame ends at a corrupt block");
                out.truncate(start);
                break;
            }
        }
        blocks += 1;
        at += 4 + size as usize;
        if out.len() > MAX_OUTPUT {
            return Err(DecompressError::TooLarge);
        }
    }
    if blocks == 0 {
        return Err(DecompressError::Lz4NoBlock);
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An LZ4 legacy frame as the kernel's build writes it (`lz4 -l` plus the size
    /// trailer), with blocks of `block` bytes instead of 8 MiB to test several.
    pub(crate) fn lz4_legacy_frame(data: &[u8], block: usize) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in data.chunks(block) {
            let c = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(c.len() as u32).to_le_bytes());
            out.extend_from_slice(&c);
        }
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, data).unwrap();
        gz.finish().unwrap()
    }

    pub(crate) fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    /// Compressible text of `n` bytes that is not one repeated byte.
    pub(crate) fn sample(n: usize) -> Vec<u8> {
        (0..n)
            .map(|i| b"sonde kernel btf "[i % 17] ^ (i / 4096) as u8)
            .collect()
    }

    #[test]
    fn detects_each_magic() {
        assert_eq!(Compression::detect(&gzip(b"x")), Some(Compression::Gzip));
        assert_eq!(Compression::detect(&zstd(b"x")), Some(Compression::Zstd));
        assert_eq!(
            Compression::detect(&lz4_legacy_frame(b"x", 8)),
            Some(Compression::Lz4Legacy)
        );
        assert_eq!(
            Compression::detect(XZ_HELLO),
            Some(Compression::Xz),
            "testdata/hello.xz"
        );
        assert_eq!(Compression::detect(b"\x7fELF"), None);
    }

    #[test]
    fn gzip_and_zstd_round_trip_with_trailing_bytes() {
        let data = sample(300_000);
        for (kind, mut packed) in [
            (Compression::Gzip, gzip(&data)),
            (Compression::Zstd, zstd(&data)),
        ] {
            // The kernel appends the decompressed size; an image has more after it.
            packed.extend_from_slice(&(data.len() as u32).to_le_bytes());
            packed.extend_from_slice(b"rest of the image");
            assert_eq!(decompress(kind, &packed).unwrap(), data, "{kind:?}");
        }
    }

    /// `printf 'hello, sonde\n' | xz -C crc64` and `... | xz --x86 --lzma2 -C crc32`
    /// (the kernel's filter chain).
    const XZ_HELLO: &[u8] = include_bytes!("testdata/hello.xz");
    const XZ_HELLO_BCJ: &[u8] = include_bytes!("testdata/hello-x86.xz");

    #[test]
    fn xz_plain_and_with_the_kernels_bcj_filter() {
        assert_eq!(xz(XZ_HELLO).unwrap(), b"hello, sonde\n");
        assert_eq!(xz(XZ_HELLO_BCJ).unwrap(), b"hello, sonde\n");
        let mut trailing = XZ_HELLO.to_vec();
        trailing.extend_from_slice(&[0x0d, 0, 0, 0]);
        assert_eq!(
            decompress(Compression::Xz, &trailing).unwrap(),
            b"hello, sonde\n"
        );
        let truncated = &XZ_HELLO[..XZ_HELLO.len() - 10];
        assert!(xz(truncated).is_err());
    }

    #[test]
    fn lz4_legacy_reads_several_blocks_and_stops_at_the_trailer() {
        let data = sample(100_000);
        let frame = lz4_legacy_frame(&data, 30_000);
        assert_eq!(lz4_legacy(&frame).unwrap(), data);
        // Two frames back to back (the kernel's unlz4 accepts that too).
        let mut two = frame[..frame.len() - 4].to_vec();
        two.extend_from_slice(&lz4_legacy_frame(b"more", 8)[..]);
        let mut want = data.clone();
        want.extend_from_slice(b"more");
        assert_eq!(lz4_legacy(&two).unwrap(), want);
    }

    #[test]
    fn lz4_legacy_rejects_what_is_not_one() {
        assert!(lz4_legacy(b"nope").is_err());
        assert!(lz4_legacy(&LZ4_LEGACY_MAGIC).is_err());
        let mut bad = LZ4_LEGACY_MAGIC.to_vec();
        bad.extend_from_slice(&4u32.to_le_bytes());
        bad.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert!(lz4_legacy(&bad)
            .unwrap_err()
            .to_string()
            .contains("block 0"));
    }

    #[test]
    fn lz4_legacy_keeps_good_blocks_before_garbage() {
        let data = sample(50_000);
        let mut frame = lz4_legacy_frame(&data, 20_000);
        frame.truncate(frame.len() - 4);
        // What follows a scanned payload: a plausible size, then not LZ4.
        frame.extend_from_slice(&8u32.to_le_bytes());
        frame.extend_from_slice(&[0xf0; 8]);
        assert_eq!(lz4_legacy(&frame).unwrap(), data);
    }
}
