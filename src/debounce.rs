//! When a workload whose sources or template keep changing is decided: once its changes have
//! been quiet for the debounce, and at the latest the maximum wait after the first of them, so a
//! source that never stops changing (a flapping certificate, a generator) still rolls out, with
//! its newest value. Pure bookkeeping on instants given by the caller.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Debounce {
    /// Changes closer together than this are decided together.
    pub quiet: Duration,
    /// No change waits longer than this for a decision.
    pub max_wait: Duration,
}

impl Debounce {
    /// The maximum wait when none is configured: long enough to coalesce a burst of edits, short
    /// enough that a flapping source still rolls out every so often.
    pub fn with_default_max_wait(quiet: Duration) -> Self {
        Debounce {
            quiet,
            max_wait: quiet * 10,
        }
    }
}

/// The first and the latest undecided change of each key.
#[derive(Debug)]
pub struct Pending<K> {
    debounce: Debounce,
    changes: HashMap<K, (Instant, Instant)>,
}

impl<K: Hash + Eq + Clone> Pending<K> {
    pub fn new(debounce: Debounce) -> Self {
        Pending {
            debounce,
            changes: HashMap::new(),
        }
    }

    /// A change of `key` happened at `now`.
    pub fn touch(&mut self, key: &K, now: Instant) {
        self.changes
            .entry(key.clone())
            .and_modify(|(_, latest)| *latest = now)
            .or_insert((now, now));
    }

    /// How much longer `key` must wait, or `None` when it is due: then its changes count as
    /// decided and later ones start a new wait.
    pub fn take_due(&mut self, key: &K, now: Instant) -> Option<Duration> {
        let (first, latest) = *self.changes.get(key)?;
        let due = (latest + self.debounce.quiet).min(first + self.debounce.max_wait);
        if now < due {
            return Some(due - now);
        }
        self.changes.remove(key);
        None
    }

    pub fn forget(&mut self, key: &K) {
        self.changes.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn pending() -> (Pending<&'static str>, Instant) {
        let debounce = Debounce {
            quiet: 2 * SECOND,
            max_wait: 6 * SECOND,
        };
        (Pending::new(debounce), Instant::now())
    }

    #[test]
    fn an_untouched_key_is_due() {
        let (mut pending, start) = pending();
        assert_eq!(pending.take_due(&"web", start), None);
    }

    #[test]
    fn a_change_waits_for_the_quiet_period() {
        let (mut pending, start) = pending();
        pending.touch(&"web", start);
        assert_eq!(pending.take_due(&"web", start + SECOND), Some(SECOND));
        assert_eq!(pending.take_due(&"web", start + 2 * SECOND), None);
        // Decided: nothing is pending any more.
        assert_eq!(pending.take_due(&"web", start + 2 * SECOND), None);
    }

    #[test]
    fn each_change_pushes_the_decision_back() {
        let (mut pending, start) = pending();
        pending.touch(&"web", start);
        pending.touch(&"web", start + SECOND);
        assert_eq!(pending.take_due(&"web", start + 2 * SECOND), Some(SECOND));
        assert_eq!(pending.take_due(&"web", start + 3 * SECOND), None);
    }

    #[test]
    fn changes_that_never_stop_are_decided_at_the_maximum_wait() {
        let (mut pending, start) = pending();
        for second in 0..6 {
            pending.touch(&"web", start + second * SECOND);
            assert!(pending.take_due(&"web", start + second * SECOND).is_some());
        }
        assert_eq!(pending.take_due(&"web", start + 6 * SECOND), None);
        // The next change starts a new maximum wait.
        pending.touch(&"web", start + 7 * SECOND);
        assert_eq!(
            pending.take_due(&"web", start + 7 * SECOND),
            Some(2 * SECOND)
        );
    }

    #[test]
    fn keys_wait_independently_and_can_be_forgotten() {
        let (mut pending, start) = pending();
        pending.touch(&"web", start);
        pending.touch(&"db", start + SECOND);
        assert_eq!(pending.take_due(&"web", start + 2 * SECOND), None);
        assert_eq!(pending.take_due(&"db", start + 2 * SECOND), Some(SECOND));
        pending.forget(&"db");
        assert_eq!(pending.take_due(&"db", start + 2 * SECOND), None);
    }

    #[test]
    fn no_quiet_period_decides_at_once() {
        let mut pending = Pending::new(Debounce::with_default_max_wait(Duration::ZERO));
        let start = Instant::now();
        pending.touch(&"web", start);
        assert_eq!(pending.take_due(&"web", start), None);
    }

    #[test]
    fn the_default_maximum_wait_is_ten_quiet_periods() {
        assert_eq!(
            Debounce::with_default_max_wait(2 * SECOND).max_wait,
            20 * SECOND
        );
    }
}
