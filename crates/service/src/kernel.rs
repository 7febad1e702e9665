//! The CPU kernel behind `GET /cpu`: PBKDF2-HMAC-SHA256, the same work a Node
//! server would hand to `crypto.pbkdf2Sync`.

use sha2::Sha256;

/// The smallest and largest iteration counts `/cpu` accepts.
pub const ITERS_RANGE: std::ops::RangeInclusive<u32> = 1..=10_000_000;

/// Derives 32 bytes from password `password` and salt `salt` with `iters`
/// rounds and returns them as lowercase hex.
///
/// This is deliberately pure, synchronous and CPU-bound: it is the stand-in
/// for "real work" that blocks whichever thread runs it.
pub fn pbkdf2_hex(iters: u32) -> String {
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(b"password", b"salt", iters, &mut key);
    let mut hex = String::with_capacity(64);
    for byte in key {
        use std::fmt::Write;
        // Writing into a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vectors the contract publishes, so every model can be checked.
    #[test]
    fn contract_test_vectors() {
        assert_eq!(
            pbkdf2_hex(1),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
        assert_eq!(
            pbkdf2_hex(1000),
            "632c2812e46d4604102ba7618e9d6d7d2f8128f6266b4a03264d2a0460b7dcb3"
        );
    }
}
