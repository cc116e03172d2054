//! A synthetic fleet: `--fleet-hosts H` publishes H hosts to a team, each
//! once a second, as `opswire agent`s would (the `publish` op with a host
//! snapshot, on an ingest connection), so that a team's frames carry the
//! hosts of a real fleet without running hundreds of agents.
//!
//! The figures vary from host to host and from round to round the way real
//! ones do (compression ratios depend on it): one disk and one interface
//! per host, as in the measurements.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::ingest;
use super::report::FleetReport;

/// Host `i` of `team`.
pub fn host_name(team: &str, i: u64) -> String {
    format!("{team}-web-{i:03}")
}

/// Host `i`'s snapshot in round `round`, sampled at `now_us`.
pub fn snapshot(team: &str, i: u64, round: u64, now_us: i64) -> Value {
    // A spread of figures per host that drifts a little each round.
    let f = |k: u64| ((i * 7919 + k * 104_729 + round * 31 * (k + 1)) % 10_000) as f64 / 100.0;
    json!({
        "host": host_name(team, i), "sampled_at": now_us,
        "cpu": {"usage_pct": f(1), "cores_pct": [f(2), f(3), f(4), f(5)],
                "load": [f(6) / 10.0, f(7) / 10.0, f(8) / 10.0]},
        "memory": {"used_bytes": 8_000_000_000u64 + (i * 48_271_113 + round * 4_096) % 7_000_000_000,
                   "total_bytes": 16_777_216_000u64, "usage_pct": f(9),
                   "swap_used_bytes": 0, "swap_total_bytes": 2_147_483_648u64},
        "disks": [{"mount": "/", "fs_type": "ext4",
                   "used_bytes": 40_000_000_000u64 + (i * 91_138_233 + round * 65_536) % 60_000_000_000,
                   "total_bytes": 107_374_182_400u64, "usage_pct": f(10)}],
        "network": [{"iface": "eth0", "rx_bytes_per_s": f(11) * 1234.5,
                     "tx_bytes_per_s": f(12) * 987.6}],
        "processes": 150 + (i * 13 + round) % 200, "uptime_s": 86_400 + i * 3_607 + round,
    })
}

/// Publishes `hosts` hosts to `team` every second until `stop` turns true.
/// `ready` gets the outcome of the first round once every host of it was
/// acknowledged (or refused).
pub async fn publish(
    url: String,
    team: String,
    token: Option<String>,
    hosts: u64,
    mut stop: watch::Receiver<bool>,
    ready: oneshot::Sender<Result<(), String>>,
) -> FleetReport {
    let mut rep = FleetReport {
        hosts_per_team: hosts,
        ..Default::default()
    };
    let ws = match ingest::connect(&url, token.as_deref()).await {
        Ok(ws) => ws,
        Err(e) => {
            let _ = ready.send(Err(format!("fleet {team}: {e}")));
            return rep;
        }
    };
    let (mut tx, mut rx) = ws.split();
    // Counts answers; reports the first round when all of it is answered.
    let reader = tokio::spawn(async move {
        let mut ready = Some(ready);
        let (mut acked, mut errors) = (0u64, BTreeMap::<String, u64>::new());
        while let Some(Ok(m)) = rx.next().await {
            let Message::Text(t) = m else { continue };
            match ingest::answer(&t) {
                Some(Ok(())) => acked += 1,
                Some(Err(code)) => *errors.entry(code).or_default() += 1,
                None => continue,
            }
            let answered = acked + errors.values().sum::<u64>();
            if answered >= hosts {
                if let Some(r) = ready.take() {
                    let _ = r.send(if errors.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("fleet: the first round was refused: {errors:?}"))
                    });
                }
            }
        }
        (acked, errors)
    });
    let mut at = Instant::now();
    let mut id = 0u64;
    'rounds: loop {
        let now_us = opswire::time::now_micros();
        for i in 0..hosts {
            id += 1;
            let op = json!({"op": "publish", "id": id, "team": team, "stream": "metrics",
                            "data": snapshot(&team, i, rep.rounds, now_us)});
            if tx.feed(Message::text(op.to_string())).await.is_err() {
                rep.errors.insert("send failed".into(), 1);
                break 'rounds;
            }
            rep.sent += 1;
        }
        if tx.flush().await.is_err() {
            rep.errors.insert("send failed".into(), 1);
            break;
        }
        rep.rounds += 1;
        at += Duration::from_secs(1);
        tokio::select! {
            _ = tokio::time::sleep_until(at) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = tx.close().await;
    if let Ok(Ok((acked, errors))) = tokio::time::timeout(Duration::from_secs(2), reader).await {
        rep.acked = acked;
        for (k, v) in errors {
            *rep.errors.entry(k).or_default() += v;
        }
    }
    rep
}

/// Every team's publisher, running.
pub struct Fleet {
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<FleetReport>>,
    hosts: u64,
}

impl Fleet {
    /// Starts one publisher per `(team, ingest token)` and returns once
    /// every team's first round was acknowledged (within 15 s).
    pub async fn start(
        url: &str,
        teams: Vec<(String, Option<String>)>,
        hosts: u64,
    ) -> Result<Fleet, String> {
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let mut firsts = Vec::new();
        for (team, token) in teams {
            let (tx, rx) = oneshot::channel();
            firsts.push((team.clone(), rx));
            tasks.push(tokio::spawn(publish(
                url.to_owned(),
                team,
                token,
                hosts,
                stop_rx.clone(),
                tx,
            )));
        }
        let fleet = Fleet { stop, tasks, hosts };
        for (team, rx) in firsts {
            match tokio::time::timeout(Duration::from_secs(15), rx).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => return Err(e),
                Ok(Err(_)) => return Err(format!("fleet {team}: the publisher ended early")),
                Err(_) => return Err(format!("fleet {team}: no answer to the first round")),
            }
        }
        Ok(fleet)
    }

    /// Stops publishing; every team's counts together.
    pub async fn finish(self) -> FleetReport {
        let _ = self.stop.send(true);
        let mut all = FleetReport {
            hosts_per_team: self.hosts,
            ..Default::default()
        };
        for t in self.tasks {
            if let Ok(r) = t.await {
                all.rounds = all.rounds.max(r.rounds);
                all.sent += r.sent;
                all.acked += r.acked;
                for (k, v) in r.errors {
                    *all.errors.entry(k).or_default() += v;
                }
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_are_valid_host_snapshots_that_change_each_round() {
        let a = snapshot("t3", 7, 0, 1_000);
        let b = snapshot("t3", 7, 1, 2_000);
        assert_eq!(a["host"], "t3-web-007");
        assert_ne!(a["cpu"], b["cpu"]);
        // What the server requires of a published snapshot.
        let snap: opswire::protocol::HostSnapshot = serde_json::from_value(a).unwrap();
        assert_eq!(snap.host, "t3-web-007");
    }
}
