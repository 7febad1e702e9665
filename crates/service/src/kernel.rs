//! The CPU kernel behind `GET /cpu`: PBKDF2-HMAC-SHA256, the same work a Node
//! server would hand to `crypto.pbkdf2Sync`.
//!
//! A request may ask for its work in `parts` (`/cpu?iters=N&parts=P`): P
//! independent derivations of N iterations each, which a model with several
//! threads can run at once. Each part has its own salt, so the parts are
//! different work and their answers can be checked one by one.

use sha2::Sha256;

/// The smallest and largest iteration counts `/cpu` accepts, per part; the
/// iterations of all parts together have the same upper bound.
pub const ITERS_RANGE: std::ops::RangeInclusive<u32> = 1..=10_000_000;
/// How many parts one `/cpu` request may ask for.
pub const PARTS_RANGE: std::ops::RangeInclusive<u32> = 1..=64;

/// Derives 32 bytes from password `password` and part `part`'s salt with
/// `iters` rounds and returns them as lowercase hex.
///
/// Part 0's salt is `salt`, the contract's original one, so a request of one
/// part keeps the original test vectors; part p ≥ 1 uses `salt` followed by
/// p in decimal (`salt1`, `salt2`, ...).
///
/// This is deliberately pure, synchronous and CPU-bound: it is the stand-in
/// for "real work" that blocks whichever thread runs it.
pub fn pbkdf2_hex(iters: u32, part: u32) -> String {
    // Part 0, every request's only part by default, allocates nothing.
    let salt = match part {
        0 => std::borrow::Cow::Borrowed("salt"),
        p => std::borrow::Cow::Owned(format!("salt{p}")),
    };
    let mut key = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(b"password", salt.as_bytes(), iters, &mut key);
    let mut hex = String::with_capacity(65);
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
            pbkdf2_hex(1, 0),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
        assert_eq!(
            pbkdf2_hex(1000, 0),
            "632c2812e46d4604102ba7618e9d6d7d2f8128f6266b4a03264d2a0460b7dcb3"
        );
        assert_eq!(
            pbkdf2_hex(1000, 1),
            "43a5fbdf861506858816102f630c3ba726394b622118993c5c53cf9ee1570049"
        );
        assert_eq!(
            pbkdf2_hex(1000, 63),
            "67d055e4ef4ee374b107b766a4e4cb1b77ce449bee4ea011da9e9f76ad6abfd0"
        );
    }
}
