//! Outstanding requests awaiting `ack`/`error`, each with a deadline.
//!
//! Pure: time is passed in, so expiry is tested without sleeping. Generic over what is stored
//! per request (the shell keeps a reply channel; tests keep plain values). One table per socket:
//! when the socket dies the shell drains it and fails every entry at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Entry<T> {
    deadline: Instant,
    value: T,
}

/// Request id → pending value with a deadline.
#[derive(Debug)]
pub struct RequestTable<T> {
    entries: HashMap<String, Entry<T>>,
}

impl<T> Default for RequestTable<T> {
    fn default() -> Self {
        RequestTable {
            entries: HashMap::new(),
        }
    }
}

impl<T> RequestTable<T> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `id`, due at `now + timeout`. Returns the value back when the id is already
    /// pending: ids are fresh UUIDv4s, so a clash is a bug and must not silently replace the
    /// first request's reply channel.
    pub fn insert(
        &mut self,
        id: String,
        now: Instant,
        timeout: Duration,
        value: T,
    ) -> Result<(), T> {
        if self.entries.contains_key(&id) {
            return Err(value);
        }
        let deadline = now
            .checked_add(timeout)
            .unwrap_or(now + Duration::from_secs(86_400));
        self.entries.insert(id, Entry { deadline, value });
        Ok(())
    }

    /// The `ack`/`error` for `id` arrived: removes and returns its value (`None` for an unknown
    /// or already expired id, e.g. a late ack).
    pub fn resolve(&mut self, id: &str) -> Option<T> {
        self.entries.remove(id).map(|e| e.value)
    }

    /// Removes and returns every entry whose deadline is at or before `now`, earliest first.
    pub fn expire(&mut self, now: Instant) -> Vec<(String, T)> {
        let due: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.deadline <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let mut out: Vec<(Instant, String, T)> = due
            .into_iter()
            .filter_map(|id| self.entries.remove(&id).map(|e| (e.deadline, id, e.value)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        out.into_iter().map(|(_, id, v)| (id, v)).collect()
    }

    /// The earliest deadline, for the shell's timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries.values().map(|e| e.deadline).min()
    }

    /// Removes everything (socket closed): the caller fails each value.
    pub fn drain(&mut self) -> Vec<(String, T)> {
        self.entries.drain().map(|(id, e)| (id, e.value)).collect()
    }

    /// Requests still waiting for an answer.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No request is waiting.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `id` is still pending (neither resolved, expired nor drained).
    pub fn contains(&self, id: &str) -> bool {
        self.entries.contains_key(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn resolve_expire_drain() {
        let t0 = Instant::now();
        let mut t: RequestTable<u32> = RequestTable::new();
        assert_eq!(t.next_deadline(), None);
        t.insert("a".into(), t0, ms(100), 1).expect("fresh");
        t.insert("b".into(), t0, ms(50), 2).expect("fresh");
        t.insert("c".into(), t0 + ms(10), ms(50), 3).expect("fresh");
        assert_eq!(
            t.insert("a".into(), t0, ms(1), 9),
            Err(9),
            "duplicate refused"
        );
        assert_eq!(t.len(), 3);
        assert_eq!(t.next_deadline(), Some(t0 + ms(50)));

        // Table of (time, expected expiries) in order.
        let steps: &[(u64, &[(&str, u32)])] =
            &[(49, &[]), (50, &[("b", 2)]), (59, &[]), (60, &[("c", 3)])];
        for (at, want) in steps {
            let got = t.expire(t0 + ms(*at));
            let got: Vec<(&str, u32)> = got.iter().map(|(i, v)| (i.as_str(), *v)).collect();
            assert_eq!(got, *want, "at {at} ms");
        }
        assert!(t.contains("a"));
        assert_eq!(t.resolve("a"), Some(1));
        assert_eq!(t.resolve("a"), None, "late ack ignored");
        assert!(t.is_empty());

        t.insert("x".into(), t0, ms(5), 7).expect("fresh");
        t.insert("y".into(), t0, ms(5), 8).expect("fresh");
        let mut drained: Vec<u32> = t.drain().into_iter().map(|(_, v)| v).collect();
        drained.sort();
        assert_eq!(drained, [7, 8]);
        assert!(t.is_empty());
    }

    #[test]
    fn expiry_is_ordered_by_deadline() {
        let t0 = Instant::now();
        let mut t: RequestTable<&str> = RequestTable::new();
        t.insert("late".into(), t0, ms(30), "late").expect("fresh");
        t.insert("early".into(), t0, ms(10), "early")
            .expect("fresh");
        t.insert("mid".into(), t0, ms(20), "mid").expect("fresh");
        let got: Vec<&str> = t.expire(t0 + ms(100)).into_iter().map(|(_, v)| v).collect();
        assert_eq!(got, ["early", "mid", "late"]);
    }
}
