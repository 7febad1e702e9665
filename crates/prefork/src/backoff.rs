//! When the master replaces a dead worker: the respawn policy, as a pure
//! type so that it can be tested without processes or clocks.
//!
//! A worker that dies for the first time, or after a stable life, is
//! replaced at once: waiting would only cost capacity. Backoff exists for
//! crash loops (a worker that dies while booting, again and again), where
//! respawning at once would make the master spin on `fork`: from the second
//! quick death in a row the delay starts at [`BACKOFF_START`] and doubles,
//! up to [`BACKOFF_MAX`].

use std::time::Duration;

/// The delay before replacing the second quick death in a row; it doubles
/// with each further one.
pub const BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest a slot in a crash loop waits for its next worker.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A worker that lived this long died after a stable life: its slot's
/// crash loop, if it had one, is over.
pub const STABLE_LIFE: Duration = Duration::from_secs(30);

/// One slot's respawn state: how many of its workers in a row died
/// quickly.
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    quick_deaths: u32,
}

impl Backoff {
    /// Records that the slot's worker died after living `lived`, and
    /// returns how long to wait before forking its replacement.
    pub fn next_delay(&mut self, lived: Duration) -> Duration {
        if lived >= STABLE_LIFE {
            self.quick_deaths = 0;
        }
        let delay = match self.quick_deaths {
            0 => Duration::ZERO,
            n => BACKOFF_START
                .saturating_mul(1 << (n - 1).min(16))
                .min(BACKOFF_MAX),
        };
        self.quick_deaths = self.quick_deaths.saturating_add(1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUICK: Duration = Duration::from_millis(5);

    fn delays_ms(backoff: &mut Backoff, lives: &[Duration]) -> Vec<u128> {
        lives
            .iter()
            .map(|&lived| backoff.next_delay(lived).as_millis())
            .collect()
    }

    #[test]
    fn a_first_death_is_replaced_at_once() {
        assert_eq!(Backoff::default().next_delay(QUICK), Duration::ZERO);
        assert_eq!(
            Backoff::default().next_delay(STABLE_LIFE * 10),
            Duration::ZERO
        );
    }

    #[test]
    fn quick_deaths_in_a_row_back_off_doubling_up_to_the_cap() {
        let mut backoff = Backoff::default();
        assert_eq!(
            delays_ms(&mut backoff, &[QUICK; 10]),
            [0, 100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000]
        );
        // However long the loop goes on, the delay stays at the cap.
        for _ in 0..100 {
            assert_eq!(backoff.next_delay(QUICK), BACKOFF_MAX);
        }
    }

    #[test]
    fn a_death_after_a_stable_life_is_replaced_at_once_again() {
        let mut backoff = Backoff::default();
        delays_ms(&mut backoff, &[QUICK; 5]);
        assert_eq!(backoff.next_delay(STABLE_LIFE), Duration::ZERO);
        // And a new crash loop starts its backoff from the beginning.
        assert_eq!(delays_ms(&mut backoff, &[QUICK; 2]), [100, 200]);
    }

    #[test]
    fn a_life_just_short_of_stable_still_counts_as_quick() {
        let mut backoff = Backoff::default();
        let almost = STABLE_LIFE - Duration::from_millis(1);
        assert_eq!(delays_ms(&mut backoff, &[almost; 3]), [0, 100, 200]);
    }
}
