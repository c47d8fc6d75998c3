//! Reconcile after a signalling reconnect: compare the peers we know with the
//! first presence snapshot and decide who left, who survived (keep the RemotePeer, swap its
//! connection, refresh metadata) and who is new. Pure.

use serde_json::Value;

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
}
