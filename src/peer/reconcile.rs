//! Reconcile after a signalling reconnect, free of I/O.
//!
//! Two pieces: [`plan`] compares the peers we know with the first presence snapshot after the
//! reconnect and decides who left, who survived (keep the RemotePeer, swap its connection,
//! refresh metadata) and who is new; [`Reconciler`] holds the rules of *waiting* for that
//! snapshot: when a reconcile is owed, when it is overdue, how often the channel is re-subscribed
//! to ask for the snapshot again, and when to give up. MeteredPeer's event loop feeds it what
//! happened, with the current time, and acts on its answers.

use std::time::{Duration, Instant};

use serde_json::Value;

/// What a reconnect's welcome means for the reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterReconnect {
    /// No reconcile was owed (the drop happened outside a call).
    Nothing,
    /// A reconcile was owed but there is nobody to reconcile: the call is whole again at once.
    Done,
    /// Waiting for the presence snapshot, until [`Reconciler::poll_timeout`].
    Waiting,
}

/// What to do when the snapshot is overdue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overdue {
    /// Subscribe to the channel again so the server sends a fresh snapshot (`attempt` counts
    /// from 1).
    Resubscribe {
        /// Which forced re-subscribe this is, from 1 up to `max_resubscribes`.
        attempt: u32,
    },
    /// Asked often enough: report the reconcile as timed out (peers stay `reconnecting`).
    GiveUp,
}

/// The reconcile's waiting rules.
#[derive(Debug, Clone)]
pub struct Reconciler {
    /// How long to wait for a snapshot before asking again.
    deadline_after: Duration,
    /// Re-subscribes before giving up.
    max_resubscribes: u32,
    pending: bool,
    deadline: Option<Instant>,
    resubscribes: u32,
}

impl Reconciler {
    /// Nothing owed yet. `deadline_after`: how long each wait for the snapshot lasts;
    /// `max_resubscribes`: forced re-subscribes before [`Overdue::GiveUp`].
    pub fn new(deadline_after: Duration, max_resubscribes: u32) -> Self {
        Reconciler {
            deadline_after,
            max_resubscribes,
            pending: false,
            deadline: None,
            resubscribes: 0,
        }
    }

    /// Signalling dropped during a call and will reconnect: a reconcile is owed. The clock
    /// starts only once the reconnect succeeds (the backoff may take long, legitimately).
    pub fn on_drop(&mut self) {
        self.pending = true;
        self.deadline = None;
    }

    /// The reconnect's welcome arrived. `have_peers`: whether any remote peer is known.
    pub fn on_reconnected(&mut self, now: Instant, have_peers: bool) -> AfterReconnect {
        if !self.pending {
            return AfterReconnect::Nothing;
        }
        if !have_peers {
            self.pending = false;
            self.deadline = None;
            return AfterReconnect::Done;
        }
        self.resubscribes = 0;
        self.deadline = Some(now + self.deadline_after);
        AfterReconnect::Waiting
    }

    /// Whether the next presence snapshot must be reconciled (rather than applied as a diff).
    pub fn is_pending(&self) -> bool {
        self.pending
    }

    /// A snapshot arrived: returns whether it is the one to reconcile, and stops waiting.
    pub fn take_snapshot(&mut self) -> bool {
        let was = self.pending;
        self.pending = false;
        self.deadline = None;
        was
    }

    /// The call is over (left or closed): nothing is owed any more.
    pub fn cancel(&mut self) {
        self.pending = false;
        self.deadline = None;
    }

    /// When [`handle_timeout`](Self::handle_timeout) is due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }

    /// The deadline passed. `can_ask`: the peer is still reconnecting and signalling is
    /// connected (otherwise there is nobody to ask, and the next welcome restarts the clock).
    pub fn handle_timeout(&mut self, now: Instant, can_ask: bool) -> Option<Overdue> {
        match self.deadline {
            Some(d) if now >= d => {}
            _ => return None,
        }
        self.deadline = None;
        if !self.pending || !can_ask {
            return None;
        }
        if self.resubscribes < self.max_resubscribes {
            self.resubscribes += 1;
            self.deadline = Some(now + self.deadline_after);
            Some(Overdue::Resubscribe {
                attempt: self.resubscribes,
            })
        } else {
            Some(Overdue::GiveUp)
        }
    }
}

/// What the first snapshot after a reconnect means for each peer, as [`plan`] decides it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReconcilePlan {
    /// Known peers missing from the snapshot: remove (PeerLeft).
    pub departures: Vec<String>,
    /// Known peers still present, in snapshot order, with their (possibly refreshed) metadata.
    pub survivors: Vec<(String, Option<Value>)>,
    /// Peers we did not know: add (PeerJoined).
    pub newcomers: Vec<(String, Option<Value>)>,
}

/// `known` in insertion order; `snapshot` as (peer id, metadata) from `presence.joined`.
/// Self and duplicate ids in the snapshot are skipped.
pub fn plan(
    known: &[String],
    snapshot: &[(String, Option<Value>)],
    self_id: &str,
) -> ReconcilePlan {
    let mut seen = std::collections::HashSet::new();
    let mut p = ReconcilePlan::default();
    for (id, meta) in snapshot {
        if id == self_id || !seen.insert(id.as_str()) {
            continue;
        }
        if known.iter().any(|k| k == id) {
            p.survivors.push((id.clone(), meta.clone()));
        } else {
            p.newcomers.push((id.clone(), meta.clone()));
        }
    }
    p.departures = known
        .iter()
        .filter(|k| !seen.contains(k.as_str()))
        .cloned()
        .collect();
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diffs_known_against_snapshot() {
        let known = vec!["bob".to_string(), "carol".to_string(), "dave".to_string()];
        let snap = vec![
            ("carol".to_string(), Some(json!({"username":"Carol 2"}))),
            ("me".to_string(), None),
            ("erin".to_string(), None),
            ("bob".to_string(), None),
            ("erin".to_string(), Some(json!({"dup":true}))),
        ];
        let p = plan(&known, &snap, "me");
        assert_eq!(p.departures, vec!["dave".to_string()]);
        assert_eq!(
            p.survivors,
            vec![
                ("carol".to_string(), Some(json!({"username":"Carol 2"}))),
                ("bob".to_string(), None)
            ]
        );
        assert_eq!(p.newcomers, vec![("erin".to_string(), None)]);
        let empty = plan(&known, &[], "me");
        assert_eq!(empty.departures.len(), 3);
        assert!(empty.survivors.is_empty() && empty.newcomers.is_empty());
    }

    const AFTER: Duration = Duration::from_secs(10);

    #[test]
    fn nothing_is_owed_without_a_drop() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(AFTER, 2);
        assert_eq!(r.on_reconnected(t0, true), AfterReconnect::Nothing);
        assert!(!r.is_pending());
        assert_eq!(r.poll_timeout(), None);
        assert!(
            !r.take_snapshot(),
            "a snapshot without a drop is an ordinary diff"
        );
    }

    #[test]
    fn a_drop_owes_a_reconcile_and_the_clock_starts_at_the_welcome() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(AFTER, 2);
        r.on_drop();
        assert!(r.is_pending());
        assert_eq!(r.poll_timeout(), None, "no deadline while the backoff runs");
        let welcome = t0 + Duration::from_secs(30);
        assert_eq!(r.on_reconnected(welcome, true), AfterReconnect::Waiting);
        assert_eq!(r.poll_timeout(), Some(welcome + AFTER));
        assert!(r.take_snapshot());
        assert!(!r.is_pending());
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.handle_timeout(welcome + AFTER, true), None);
    }

    #[test]
    fn with_nobody_to_reconcile_the_call_is_whole_at_once() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(AFTER, 2);
        r.on_drop();
        assert_eq!(r.on_reconnected(t0, false), AfterReconnect::Done);
        assert!(!r.is_pending());
        assert_eq!(r.poll_timeout(), None);
    }

    #[test]
    fn an_overdue_snapshot_is_asked_for_again_then_given_up() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(AFTER, 2);
        r.on_drop();
        r.on_reconnected(t0, true);
        assert_eq!(
            r.handle_timeout(t0 + AFTER - Duration::from_millis(1), true),
            None
        );
        assert_eq!(
            r.handle_timeout(t0 + AFTER, true),
            Some(Overdue::Resubscribe { attempt: 1 })
        );
        assert_eq!(r.poll_timeout(), Some(t0 + AFTER * 2));
        assert_eq!(
            r.handle_timeout(t0 + AFTER * 2, true),
            Some(Overdue::Resubscribe { attempt: 2 })
        );
        assert_eq!(
            r.handle_timeout(t0 + AFTER * 3, true),
            Some(Overdue::GiveUp)
        );
        assert_eq!(
            r.poll_timeout(),
            None,
            "no further deadline after giving up"
        );
        assert!(r.is_pending(), "a late snapshot is still reconciled");
        // The next drop and welcome start a fresh count.
        r.on_drop();
        r.on_reconnected(t0 + AFTER * 10, true);
        assert_eq!(
            r.handle_timeout(t0 + AFTER * 11, true),
            Some(Overdue::Resubscribe { attempt: 1 })
        );
    }

    #[test]
    fn nobody_is_asked_while_signalling_is_down_or_the_call_ended() {
        let t0 = Instant::now();
        let mut r = Reconciler::new(AFTER, 2);
        r.on_drop();
        r.on_reconnected(t0, true);
        assert_eq!(r.handle_timeout(t0 + AFTER, false), None);
        assert_eq!(r.poll_timeout(), None);
        r.on_drop();
        r.on_reconnected(t0 + AFTER, true);
        r.cancel();
        assert_eq!(r.poll_timeout(), None);
        assert_eq!(r.handle_timeout(t0 + AFTER * 5, true), None);
        assert!(!r.is_pending());
    }
}
