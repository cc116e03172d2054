//! Where a team lives in Redis. Every key of a team carries the team's
//! hash tag (`{team}`), so in a Redis Cluster a team lives on one shard
//! and a publish (one script over its keys) stays atomic.

use crate::protocol::Stream;

/// The keys of one team, in the order the scripts take them.
#[derive(Clone, Debug)]
pub struct TeamKeys {
    keys: [String; 10],
}

/// Positions in [`TeamKeys::script_keys`] (the scripts' `KEYS[i + 1]`).
const EPOCH: usize = 0;
const LOGS: usize = 2;
const ALERTS: usize = 4;
const HOSTS: usize = 9;

impl TeamKeys {
    pub fn new(prefix: &str, team: &str) -> TeamKeys {
        let t = format!("{prefix}:{{{team}}}");
        TeamKeys {
            keys: [
                format!("{t}:epoch"),
                format!("{t}:logs:seq"),
                format!("{t}:logs"),
                format!("{t}:alerts:seq"),
                format!("{t}:alerts"),
                // Firing alerts: fingerprint → frame; by seq; → content.
                format!("{t}:firing"),
                format!("{t}:firing:order"),
                format!("{t}:firing:state"),
                // Recently resolved fingerprints, by seq.
                format!("{t}:resolved"),
                format!("{t}:hosts"),
            ],
        }
    }

    /// The keys the publish and snapshot scripts take (all but hosts).
    pub fn script_keys(&self) -> &[String] {
        &self.keys[..HOSTS]
    }

    pub fn epoch(&self) -> &str {
        &self.keys[EPOCH]
    }

    /// The Redis Stream of a log or alert stream.
    pub fn stream(&self, stream: Stream) -> &str {
        match stream {
            Stream::Alerts => &self.keys[ALERTS],
            _ => &self.keys[LOGS],
        }
    }

    /// The counter of a log or alert stream's seq.
    pub fn seq(&self, stream: Stream) -> &str {
        match stream {
            Stream::Alerts => &self.keys[ALERTS - 1],
            _ => &self.keys[LOGS - 1],
        }
    }

    pub fn hosts(&self) -> &str {
        &self.keys[HOSTS]
    }
}

/// Each process's subscriber counts, for `/api/v1/teams` (not a team's).
pub fn nodes(prefix: &str) -> String {
    format!("{prefix}:nodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_team_has_its_hash_tag() {
        let k = TeamKeys::new("opswire", "payments");
        for key in k.script_keys().iter().chain([&k.hosts().to_owned()]) {
            assert!(key.starts_with("opswire:{payments}:"), "{key}");
        }
        assert_eq!(k.stream(Stream::Logs), "opswire:{payments}:logs");
        assert_eq!(k.stream(Stream::Alerts), "opswire:{payments}:alerts");
    }
}
