//! The read-only dataset behind `GET /data`.
//!
//! It exists to make memory sharing measurable: the same bytes are either
//! loaded once and shared (prefork's before-fork load, threadpool's `Arc`) or
//! copied into every worker (prefork's per-worker load).

/// The window `/data` checksums: one request reads this many bytes.
pub const WINDOW: usize = 64 * 1024;

/// Deterministic pseudo-random bytes, checksummed in [`WINDOW`]-sized windows.
#[derive(Debug)]
pub struct Dataset {
    bytes: Vec<u8>,
}

impl Dataset {
    /// Fills `mb` MiB. Every page is written, so the memory is really
    /// resident, and the content depends only on `mb`: every worker and every
    /// model serves the same answers.
    pub fn generate(mb: usize) -> Self {
        let mut bytes = vec![0u8; mb * 1024 * 1024];
        // SplitMix64: tiny, fast and good enough for filler.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for chunk in bytes.chunks_mut(8) {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Self { bytes }
    }

    /// How many windows `key` chooses among.
    pub fn windows(&self) -> u64 {
        (self.bytes.len() / WINDOW) as u64
    }

    /// The FNV-1a checksum of window `key % windows()`, as 16 hex digits.
    /// Returns `None` for an empty dataset.
    pub fn checksum(&self, key: u64) -> Option<String> {
        let windows = self.windows();
        if windows == 0 {
            return None;
        }
        let start = (key % windows) as usize * WINDOW;
        let hash = self.bytes[start..start + WINDOW]
            .iter()
            .fold(0xcbf2_9ce4_8422_2325u64, |hash, &byte| {
                (hash ^ byte as u64).wrapping_mul(0x0000_0100_0000_01b3)
            });
        Some(format!("{hash:016x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_keys_wrap() {
        let a = Dataset::generate(1);
        let b = Dataset::generate(1);
        assert_eq!(a.windows(), 16);
        assert_eq!(a.checksum(3), b.checksum(3));
        assert_eq!(a.checksum(3), a.checksum(19));
        assert_ne!(a.checksum(3), a.checksum(4));
    }

    #[test]
    fn empty_dataset_has_no_windows() {
        assert_eq!(Dataset::generate(0).checksum(0), None);
    }
}
