//! Samples this host with `sysinfo` into a [`HostSnapshot`].
//!
//! Sampling reads /proc and /sys synchronously, so it never runs on the
//! async runtime: the ticker thread (see `startup`) owns the [`Sampler`].
//! CPU usage and network rates are deltas, so the first sample after
//! construction reports the values since `Sampler::new`.
//!
//! In a container, CPU, memory, load and uptime are the host's already
//! (the kernel does not namespace them); disks and the process count are
//! read from a **host root** when one is given (the host's `/` mounted
//! read-only, e.g. at `/host`), like node_exporter's `--path.rootfs`: the
//! host's mount table and usage under it ([`mounts`]), and its processes
//! from `<root>/proc`. Network interfaces are those of the network
//! namespace the sampler runs in: the host's only with the host's network
//! (docs/agent.md, "In a container").

pub mod mounts;
pub mod ticker;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, Networks, RefreshKind, System};

use crate::protocol::{CpuStats, DiskStats, HostSnapshot, HostSource, MemoryStats, NetworkStats};
use crate::time::now_micros;

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("sysinfo: {0}")]
    Sysinfo(String),
    #[error(
        "cannot read the mount table {path}: {source} (is the host's / mounted at the host root?)"
    )]
    MountTable {
        path: String,
        source: std::io::Error,
    },
}

/// Keeps the state deltas need between samples.
pub struct Sampler {
    host: String,
    /// The host's `/` as this process sees it (`None`: this process's own).
    host_root: Option<PathBuf>,
    system: System,
    /// The filesystems to report, re-read from the mount table every 60
    /// samples.
    disks: Vec<mounts::Disk>,
    /// `statvfs` of each disk, with a deadline (a hung NFS mount).
    probe: mounts::UsageProbe,
    networks: Networks,
    /// Previous cumulative (rx, tx) byte counters per interface.
    net_prev: HashMap<String, (u64, u64)>,
    net_at: Instant,
    samples: u64,
}

impl Sampler {
    /// A sampler of this host, or of the host whose `/` is at `host_root`.
    pub fn new(host: String, host_root: Option<PathBuf>) -> Result<Sampler, SamplerError> {
        let err = |e: sysinfo::Error| SamplerError::Sysinfo(e.to_string());
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_usage())
                .with_memory(MemoryRefreshKind::everything()),
        )
        .map_err(err)?;
        let disks = read_disks(host_root.as_deref())?;
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
            host_root,
            system,
            disks,
            probe: mounts::UsageProbe::new(mounts::DEFAULT_MOUNT_TIMEOUT),
            networks,
            net_prev,
            net_at: Instant::now(),
            samples: 0,
        })
    }

    /// How long the disks' `statvfs` calls may take (all at once) before a
    /// disk is left out of the snapshot (until its call returns); at most
    /// half of `tick`, so a hung mount never costs a whole tick.
    pub fn with_mount_timeout(mut self, timeout: Duration, tick: Duration) -> Sampler {
        self.probe = mounts::UsageProbe::new(timeout.min(tick / 2));
        self
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
        if relist && self.samples > 1 {
            // A table that cannot be read now keeps the last list.
            if let Ok(d) = read_disks(self.host_root.as_deref()) {
                self.disks = d;
            }
        }
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

        let root = self.host_root.as_deref();
        let paths: Vec<PathBuf> = self
            .disks
            .iter()
            .map(|d| mounts::under_root(root, &d.mount))
            .collect();
        let usage = self.probe.usage_all(&paths);
        let disks: Vec<DiskStats> = self
            .disks
            .iter()
            .zip(usage)
            .filter_map(|(d, u)| {
                let mounts::Usage::Bytes(total, available) = u else {
                    return None;
                };
                let used = total.saturating_sub(available);
                (total > 0).then(|| DiskStats {
                    mount: d.mount.clone(),
                    fs_type: d.fs_type.clone(),
                    used_bytes: used,
                    total_bytes: total,
                    usage_pct: pct(used, total),
                })
            })
            .collect();

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
            processes: count_processes(&mounts::under_root(root, "/proc")),
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

fn read_disks(host_root: Option<&Path>) -> Result<Vec<mounts::Disk>, SamplerError> {
    mounts::read(host_root).map_err(|source| SamplerError::MountTable {
        path: mounts::table_path(host_root).display().to_string(),
        source,
    })
}

/// Counts processes from the numeric entries of `proc` (the host's under
/// a host root): far cheaper than a sysinfo process refresh, which reads
/// several files per process.
fn count_processes(proc: &Path) -> u64 {
    #[cfg(target_os = "linux")]
    {
        std::fs::read_dir(proc)
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
        let _ = proc;
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
        let mut s = Sampler::new("test-host".into(), None).unwrap();
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
