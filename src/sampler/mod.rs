//! Samples this host with `sysinfo` into a [`HostSnapshot`].
//!
//! Sampling reads /proc and /sys synchronously, so it never runs on the
//! async runtime: the ticker thread (see `startup`) owns the [`Sampler`].
//! CPU usage and network rates are deltas, so the first sample after
//! construction reports the values since `Sampler::new`.

pub mod ticker;

use std::collections::HashMap;
use std::time::Instant;

use sysinfo::{
    CpuRefreshKind, DiskRefreshKind, Disks, MemoryRefreshKind, Networks, RefreshKind, System,
};

use crate::protocol::{CpuStats, DiskStats, HostSnapshot, HostSource, MemoryStats, NetworkStats};
use crate::time::now_micros;

/// Filesystems that are not disks an operator cares about.
const PSEUDO_FS: &[&str] = &[
    "tmpfs",
    "devtmpfs",
    "overlay",
    "squashfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "nsfs",
    "autofs",
    "ramfs",
    "fuse.lxcfs",
];

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("sysinfo: {0}")]
    Sysinfo(String),
}

/// Keeps the state deltas need between samples.
pub struct Sampler {
    host: String,
    system: System,
    disks: Disks,
    networks: Networks,
    /// Previous cumulative (rx, tx) byte counters per interface.
    net_prev: HashMap<String, (u64, u64)>,
    net_at: Instant,
    samples: u64,
}

impl Sampler {
    pub fn new(host: String) -> Result<Sampler, SamplerError> {
        let err = |e: sysinfo::Error| SamplerError::Sysinfo(e.to_string());
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_usage())
                .with_memory(MemoryRefreshKind::everything()),
        )
        .map_err(err)?;
        let disks =
            Disks::new_with_refreshed_list_specifics(DiskRefreshKind::nothing().with_storage())
                .map_err(err)?;
        let networks = Networks::new_with_refreshed_list().map_err(err)?;
        let net_prev = networks
            .iter()
            .map(|(name, d)| {
                (
                    name.to_string_lossy().into_owned(),
                    (d.total_received(), d.total_transmitted()),
                )
            })
            .collect();
        Ok(Sampler {
            host,
            system,
            disks,
            networks,
            net_prev,
            net_at: Instant::now(),
            samples: 0,
        })
    }

    /// The OS host name, or "localhost" when it cannot be read.
    pub fn os_host_name() -> String {
        System::host_name().unwrap_or_else(|_| "localhost".into())
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// Takes one sample. Blocking: call it from a thread of its own.
    pub fn sample(&mut self) -> HostSnapshot {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory();
        // Refresh the list every 60 samples to see new mounts / interfaces,
        // and only the counters otherwise.
        let relist = self.samples.is_multiple_of(60);
        self.samples += 1;
        self.disks
            .refresh_specifics(relist, DiskRefreshKind::nothing().with_storage());
        self.networks.refresh(relist);

        let cores_pct: Vec<f32> = self
            .system
            .cpus()
            .iter()
            .map(|c| round1(c.usage()))
            .collect();
        let load = System::load_average()
            .map(|l| [l.one, l.five, l.fifteen])
            .unwrap_or_default();
        let total = self.system.total_memory();
        let used = self.system.used_memory();

        let mut disks: Vec<DiskStats> = self
            .disks
            .iter()
            .filter(|d| {
                let fs = d.file_system().to_string_lossy();
                d.total_space() > 0 && !PSEUDO_FS.contains(&fs.as_ref())
            })
            .map(|d| {
                let total = d.total_space();
                let used = total.saturating_sub(d.available_space());
                DiskStats {
                    mount: d.mount_point().to_string_lossy().into_owned(),
                    used_bytes: used,
                    total_bytes: total,
                    usage_pct: pct(used, total),
                }
            })
            .collect();
        disks.sort_by(|a, b| a.mount.cmp(&b.mount));
        disks.dedup_by(|a, b| a.mount == b.mount);

        let now = Instant::now();
        let dt = now.duration_since(self.net_at).as_secs_f64().max(1e-3);
        self.net_at = now;
        let mut network = Vec::with_capacity(self.networks.len());
        let mut seen = HashMap::with_capacity(self.networks.len());
        for (name, data) in self.networks.iter() {
            let name = name.to_string_lossy().into_owned();
            let (rx, tx) = (data.total_received(), data.total_transmitted());
            let (prx, ptx) = self.net_prev.get(&name).copied().unwrap_or((rx, tx));
            network.push(NetworkStats {
                iface: name.clone(),
                rx_bytes_per_s: round1_f64(rx.saturating_sub(prx) as f64 / dt),
                tx_bytes_per_s: round1_f64(tx.saturating_sub(ptx) as f64 / dt),
            });
            seen.insert(name, (rx, tx));
        }
        self.net_prev = seen;
        network.sort_by(|a, b| a.iface.cmp(&b.iface));

        HostSnapshot {
            host: self.host.clone(),
            source: HostSource::Local,
            sampled_at: now_micros(),
            cpu: CpuStats {
                usage_pct: round1(self.system.global_cpu_usage()),
                cores_pct,
                load,
            },
            memory: MemoryStats {
                used_bytes: used,
                total_bytes: total,
                usage_pct: pct(used, total),
                swap_used_bytes: self.system.used_swap(),
                swap_total_bytes: self.system.total_swap(),
            },
            disks,
            network,
            processes: count_processes(),
            uptime_s: System::uptime().unwrap_or(0),
        }
    }
}

fn pct(used: u64, total: u64) -> f32 {
    if total == 0 {
        0.0
    } else {
        round1((used as f64 / total as f64 * 100.0) as f32)
    }
}

fn round1(v: f32) -> f32 {
    (v * 10.0).round() / 10.0
}

fn round1_f64(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Counts processes from /proc's numeric entries: far cheaper than a
/// sysinfo process refresh, which reads several files per process.
fn count_processes() -> u64 {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_dir("/proc")
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| {
                        e.file_name()
                            .as_encoded_bytes()
                            .iter()
                            .all(u8::is_ascii_digit)
                    })
                    .count() as u64
            })
            .unwrap_or(0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let mut s = System::new();
        s.refresh_processes(sysinfo::ProcessesToUpdate::All, true);
        s.processes().len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_has_the_protocol_fields() {
        let mut s = Sampler::new("test-host".into()).unwrap();
        let snap = s.sample();
        assert_eq!(snap.host, "test-host");
        assert!(snap.memory.total_bytes > 0);
        assert!(!snap.cpu.cores_pct.is_empty());
        assert!(snap.processes > 0);
        assert!(snap.sampled_at > 1_700_000_000_000_000);
        let v = serde_json::to_value(&snap).unwrap();
        for key in [
            "host",
            "source",
            "sampled_at",
            "cpu",
            "memory",
            "disks",
            "network",
            "processes",
            "uptime_s",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["source"], "local");
    }
}
