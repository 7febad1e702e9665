//! How much a server can take, and what share of it to offer.
//!
//! Experiments that hold a steady load (a crash under load, latency at a
//! given utilisation) first measure the server's capacity with a short
//! unthrottled load on the same server, then offer a share of it at a fixed
//! rate with latency correction.

use std::time::Duration;

use loadgen::{LoadSpec, LoadgenError};

use crate::session::Session;

/// The steady load an experiment asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Offered {
    /// This many requests per second.
    Rate(f64),
    /// This share (0 to 1) of the capacity measured just before.
    Share(f64),
}

/// The rate to offer, and the capacity it came from when one was measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    pub rps: f64,
    pub capacity_rps: Option<f64>,
}

/// `share` of `capacity_rps`: the arithmetic, on its own to be tested.
pub fn share_of(capacity_rps: f64, share: f64) -> f64 {
    capacity_rps * share
}

/// Resolves `offered` against the server at `urls`: a fixed rate as is, a
/// share after an unthrottled probe of `probe` at `concurrency`.
pub fn resolve(
    session: &Session,
    offered: Offered,
    urls: &[String],
    concurrency: u32,
    probe: Duration,
) -> Result<Rate, LoadgenError> {
    match offered {
        Offered::Rate(rps) => Ok(Rate {
            rps,
            capacity_rps: None,
        }),
        Offered::Share(share) => {
            let spec = LoadSpec::new(urls.to_vec(), concurrency, probe);
            let outcome = session.load(&spec, "probe")?.wait(&session.interrupted)?;
            let capacity = outcome.summary.rps;
            tracing::debug!(capacity, share, "capacity probed");
            Ok(Rate {
                rps: share_of(capacity, share),
                capacity_rps: Some(capacity),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_share_scales_the_capacity() {
        assert_eq!(share_of(1000.0, 0.65), 650.0);
        assert_eq!(share_of(0.0, 0.5), 0.0);
    }
}
