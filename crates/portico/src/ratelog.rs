//! Repeated errors, said once in a while with how often they happened meanwhile: a full disk,
//! a dead receiver or a file-descriptor shortage must not write a log line per event.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a repeated error is said at most.
pub(crate) const EVERY: Duration = Duration::from_secs(10);

/// One site's repeated error: said at most once per [`EVERY`]. A crate-private type, so its
/// use is shown as text (a doctest cannot reach it):
///
/// ```text
/// static FAILED: Throttle = Throttle::new();
/// if let Some(suppressed) = FAILED.check() {
///     tracing::error!(suppressed, "…");
/// }
/// ```
pub(crate) struct Throttle {
    every: Duration,
    state: Mutex<State>,
}

struct State {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    /// A throttle that says the first error at once.
    pub(crate) const fn new() -> Throttle {
        Throttle::every(EVERY)
    }

    /// A throttle that says an error at most once per `every`.
    pub(crate) const fn every(every: Duration) -> Throttle {
        Throttle {
            every,
            state: Mutex::new(State {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(how many were not said since the last one)` when this one should be said.
    pub(crate) fn check(&self) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match s.last {
            Some(t) if now.duration_since(t) < self.every => {
                s.suppressed += 1;
                None
            }
            _ => {
                s.last = Some(now);
                Some(std::mem::take(&mut s.suppressed))
            }
        }
    }
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_is_said_the_rest_counted_until_the_next_turn() {
        let t = Throttle::new();
        assert_eq!(t.check(), Some(0));
        assert_eq!(t.check(), None);
        assert_eq!(t.check(), None);
        t.state.lock().unwrap().last = Some(Instant::now() - EVERY);
        assert_eq!(t.check(), Some(2));
        assert_eq!(t.check(), None);
    }

    #[test]
    fn a_longer_period_holds_longer() {
        let t = Throttle::every(Duration::from_secs(60));
        assert_eq!(t.check(), Some(0));
        t.state.lock().unwrap().last = Some(Instant::now() - EVERY);
        assert_eq!(t.check(), None);
        t.state.lock().unwrap().last = Some(Instant::now() - Duration::from_secs(60));
        assert_eq!(t.check(), Some(1));
    }
}
