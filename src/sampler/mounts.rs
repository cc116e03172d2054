//! Which filesystems a host has: its mount table (`mountinfo`), read by
//! opswire itself rather than through sysinfo, so that a sampler in a
//! container can report the Docker host's disks from a host root
//! (`/host/proc/1/mountinfo`, usage under `/host/<mount>`), as
//! node_exporter does with `--path.rootfs`.
//!
//! Which entries are disks ([`disks`]):
//!
//! * not a pseudo or memory filesystem ([`PSEUDO_FS`]: proc, sysfs,
//!   tmpfs, overlay, …) — except the root, `/`, which is always reported
//!   once whatever it is: a container's own root is `overlay`, and the
//!   frame says so (`fs_type`);
//! * not a bind mount of part of a filesystem (its `root` field is not
//!   `/`): Docker bind-mounts single files (`/etc/hosts`,
//!   `/etc/resolv.conf`, `/etc/hostname`) and directories (volumes) from
//!   the host's disk, and none of them is a disk an operator means. A
//!   btrfs subvolume (whose `root` is the subvolume) is a filesystem's
//!   mount, though, and counts;
//! * one mount point once (the mount on top, which is the one visible),
//!   and one filesystem once (`/` first, then in mount order).
//!
//! When the table has no `/` (a chroot whose root is not a mount point),
//! the root is added from `statfs("/")`, so a sampler always reports the
//! filesystem it runs on.
//!
//! Usage comes from `statvfs`, through a [`UsageProbe`] with a deadline:
//! on a hard NFS mount whose server is gone, `statvfs` blocks in the
//! kernel, for ever. node_exporter's `--collector.filesystem.mount-timeout`
//! is the model: the call runs on a thread of its own; past the timeout the
//! mount is left out of the snapshot and marked **stuck**, and it is not
//! asked again until that call returns, so a hung mount costs the sampler
//! one timeout once and one parked thread, not one thread per tick.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Filesystem types that are not disks an operator cares about.
pub const PSEUDO_FS: &[&str] = &[
    "autofs",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "debugfs",
    "devpts",
    "devtmpfs",
    "efivarfs",
    "fuse.gvfsd-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fusectl",
    "hugetlbfs",
    "mqueue",
    "nsfs",
    "overlay",
    "proc",
    "pstore",
    "ramfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "squashfs",
    "sysfs",
    "tmpfs",
    "tracefs",
];

/// One line of a `mountinfo` table (`proc(5)`), the fields opswire uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the filesystem.
    pub device: String,
    /// The directory of the filesystem that is mounted (`/` for a whole
    /// filesystem; a path for a bind mount of part of one).
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
}

/// A filesystem to report: where it is mounted and its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    pub mount: String,
    pub fs_type: String,
}

/// Parses a `mountinfo` table; lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut l = left.split(' ');
            let _id = l.next()?;
            let _parent = l.next()?;
            let device = l.next()?;
            let root = l.next()?;
            let mount_point = l.next()?;
            let fs_type = right.split(' ').next()?;
            Some(MountEntry {
                device: device.to_owned(),
                root: unescape(root),
                mount_point: unescape(mount_point),
                fs_type: fs_type.to_owned(),
            })
        })
        .collect()
}

/// Undoes the kernel's octal escapes (`\040` for a space, `\011`, `\012`,
/// `\134`).
fn unescape(s: &str) -> String {
    if !s.contains('\\') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The filesystems of a mount table worth reporting as disks (see the
/// module doc), sorted by mount point.
pub fn disks(entries: &[MountEntry]) -> Vec<Disk> {
    // The mount on top of each mount point: the last one in the table.
    let mut seen_points = HashSet::new();
    let mut visible: Vec<&MountEntry> = entries
        .iter()
        .rev()
        .filter(|e| seen_points.insert(e.mount_point.as_str()))
        .collect();
    visible.reverse();
    // The root's filesystem first: its other mounts are the same disk.
    visible.sort_by_key(|e| e.mount_point != "/");
    let mut seen_devices = HashSet::new();
    let mut out: Vec<Disk> = visible
        .into_iter()
        .filter(|e| {
            let whole = e.root == "/" || e.fs_type == "btrfs";
            e.mount_point == "/" || (whole && !PSEUDO_FS.contains(&e.fs_type.as_str()))
        })
        .filter(|e| seen_devices.insert(e.device.as_str()) || e.mount_point == "/")
        .map(|e| Disk {
            mount: e.mount_point.clone(),
            fs_type: e.fs_type.clone(),
        })
        .collect();
    out.sort_by(|a, b| a.mount.cmp(&b.mount));
    out
}

/// Where the mount table is read: the host's init's under a host root
/// (its PID 1 sees the host's mounts), else this process's own.
pub fn table_path(host_root: Option<&Path>) -> PathBuf {
    match host_root {
        Some(root) => root.join("proc/1/mountinfo"),
        None => PathBuf::from("/proc/self/mountinfo"),
    }
}

/// The path to query for `mount` (as the host names it) from here.
pub fn under_root(host_root: Option<&Path>, mount: &str) -> PathBuf {
    match host_root {
        Some(root) => root.join(mount.trim_start_matches('/')),
        None => PathBuf::from(mount),
    }
}

/// Reads the disks of this host (or of the host under `host_root`).
/// `/` is added from `statfs` when the table has none.
#[cfg(target_os = "linux")]
pub fn read(host_root: Option<&Path>) -> std::io::Result<Vec<Disk>> {
    let table = std::fs::read_to_string(table_path(host_root))?;
    let mut disks = disks(&parse_mountinfo(&table));
    if !disks.iter().any(|d| d.mount == "/") {
        disks.insert(
            0,
            Disk {
                mount: "/".into(),
                fs_type: fs_type_of(&under_root(host_root, "/")).into(),
            },
        );
    }
    Ok(disks)
}

/// Total and available bytes of the filesystem at `path`.
#[cfg(target_os = "linux")]
pub fn usage(path: &Path) -> Option<(u64, u64)> {
    let s = rustix::fs::statvfs(path).ok()?;
    Some((s.f_blocks * s.f_frsize, s.f_bavail * s.f_frsize))
}

/// How long a filesystem's `statvfs` may take before the mount is left out
/// (`sampler.mount_timeout_ms`, the agent's `--mount-timeout-ms`).
pub const DEFAULT_MOUNT_TIMEOUT: Duration = Duration::from_secs(1);

/// What [`UsageProbe::usage`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// Total and available bytes.
    Bytes(u64, u64),
    /// `statvfs` failed (the mount went away, no permission).
    Unavailable,
    /// `statvfs` did not return within the timeout, now or on an earlier
    /// call that is still blocked: the mount is skipped until it returns.
    Stuck,
}

type StatFn = dyn Fn(&Path) -> Option<(u64, u64)> + Send + Sync;

/// `statvfs` with a deadline; see the module docs.
pub struct UsageProbe {
    timeout: Duration,
    /// Mounts whose call is still blocked.
    stuck: Arc<Mutex<HashSet<PathBuf>>>,
    stat: Arc<StatFn>,
}

impl UsageProbe {
    pub fn new(timeout: Duration) -> UsageProbe {
        UsageProbe::with(timeout, usage)
    }

    /// A probe over another stat function (the tests' hung mount).
    pub fn with(
        timeout: Duration,
        stat: impl Fn(&Path) -> Option<(u64, u64)> + Send + Sync + 'static,
    ) -> UsageProbe {
        UsageProbe {
            timeout,
            stuck: Arc::new(Mutex::new(HashSet::new())),
            stat: Arc::new(stat),
        }
    }

    /// Whether `path`'s last call is still blocked.
    pub fn is_stuck(&self, path: &Path) -> bool {
        self.stuck().contains(path)
    }

    /// The set of stuck mounts; a poisoned lock is still the set (a panic
    /// elsewhere must not make every hung mount look fresh again).
    fn stuck(&self) -> std::sync::MutexGuard<'_, HashSet<PathBuf>> {
        self.stuck.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The usage of the filesystem at `path`, within the timeout.
    pub fn usage(&self, path: &Path) -> Usage {
        self.usage_all(&[path.to_owned()])[0]
    }

    /// The usage of each filesystem, asked all at once and waited for
    /// until one deadline: N hung mounts cost one timeout, not N.
    pub fn usage_all(&self, paths: &[PathBuf]) -> Vec<Usage> {
        let deadline = Instant::now() + self.timeout;
        let pending: Vec<_> = paths.iter().map(|p| self.start(p)).collect();
        pending
            .into_iter()
            .zip(paths)
            .map(|(call, path)| match call {
                Call::Done(u) => u,
                Call::Pending { rx, finished } => self.finish(path, rx, &finished, deadline),
            })
            .collect()
    }

    /// Starts `path`'s call on a thread of its own.
    fn start(&self, path: &Path) -> Call {
        if self.is_stuck(path) {
            return Call::Done(Usage::Stuck);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let finished = Arc::new(AtomicBool::new(false));
        let (p, stuck, stat, done) = (
            path.to_owned(),
            self.stuck.clone(),
            self.stat.clone(),
            finished.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("opswire-statvfs".into())
            .spawn(move || {
                let got = stat(&p);
                let _ = tx.send(got);
                // Under the lock the prober decides on, so that a call that
                // ends just after its timeout is never left stuck.
                let mut s = stuck.lock().unwrap_or_else(PoisonError::into_inner);
                done.store(true, Ordering::SeqCst);
                if s.remove(&p) {
                    tracing::info!(mount = %p.display(), "statvfs returned: the mount is reported again");
                }
            });
        match spawned {
            Ok(_) => Call::Pending { rx, finished },
            // No thread to spare: skip the disk this time rather than ask
            // on the sampler's own thread, which a hung mount would block.
            Err(_) => Call::Done(Usage::Unavailable),
        }
    }

    /// Waits for a started call until `deadline`.
    fn finish(&self, path: &Path, rx: StatRx, finished: &AtomicBool, deadline: Instant) -> Usage {
        let bytes =
            |r: Option<(u64, u64)>| r.map_or(Usage::Unavailable, |(t, a)| Usage::Bytes(t, a));
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(r) => bytes(r),
            Err(mpsc::RecvTimeoutError::Disconnected) => Usage::Unavailable,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let mut s = self.stuck();
                if finished.load(Ordering::SeqCst) {
                    // It returned as the deadline passed.
                    return bytes(rx.try_recv().ok().flatten());
                }
                s.insert(path.to_owned());
                drop(s);
                tracing::warn!(
                    mount = %path.display(),
                    timeout_ms = self.timeout.as_millis() as u64,
                    "statvfs did not return in time (a hung network filesystem?): the mount is left out until it does"
                );
                Usage::Stuck
            }
        }
    }
}

type StatRx = mpsc::Receiver<Option<(u64, u64)>>;

/// One filesystem's call, started.
enum Call {
    Done(Usage),
    Pending {
        rx: StatRx,
        finished: Arc<AtomicBool>,
    },
}

/// Elsewhere the sampler reports no disks (opswire targets Linux).
#[cfg(not(target_os = "linux"))]
pub fn read(_host_root: Option<&Path>) -> std::io::Result<Vec<Disk>> {
    Ok(Vec::new())
}

#[cfg(not(target_os = "linux"))]
pub fn usage(_path: &Path) -> Option<(u64, u64)> {
    None
}

/// The type of the filesystem at `path`, from its `statfs` magic number.
#[cfg(target_os = "linux")]
fn fs_type_of(path: &Path) -> &'static str {
    let Ok(s) = rustix::fs::statfs(path) else {
        return "unknown";
    };
    match s.f_type as u64 {
        0xEF53 => "ext4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x794C_7630 => "overlay",
        0x0102_1994 => "tmpfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0x6573_5546 => "fuse",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Condvar;

    fn table(name: &str) -> Vec<Disk> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/mountinfo")
            .join(name);
        disks(&parse_mountinfo(&std::fs::read_to_string(path).unwrap()))
    }

    fn mounts(d: &[Disk]) -> Vec<(&str, &str)> {
        d.iter()
            .map(|d| (d.mount.as_str(), d.fs_type.as_str()))
            .collect()
    }

    #[test]
    fn a_docker_container_reports_its_overlay_root_once_and_no_bind_mounted_file() {
        // Recorded in a `docker run debian:12` with a volume and a
        // bind-mounted config file.
        let d = table("docker-container");
        assert_eq!(mounts(&d), [("/", "overlay")]);
    }

    #[test]
    fn the_docker_hosts_table_under_a_host_root_reports_its_disks_not_the_containers() {
        // The host's PID 1's table, as `/host/proc/1/mountinfo` shows it
        // to an agent with `/:/host:ro,rslave`.
        let d = table("docker-host");
        assert_eq!(
            mounts(&d),
            [
                ("/", "ext4"),
                ("/boot", "ext2"),
                ("/boot/efi", "vfat"),
                ("/data", "xfs")
            ]
        );
    }

    #[test]
    fn a_chroot_whose_root_is_not_a_mount_point_has_no_root_entry() {
        // `read` adds `/` from statfs then (see `read_always_has_the_root`).
        let d = table("chroot");
        assert_eq!(mounts(&d), []);
    }

    #[test]
    fn a_host_with_several_disks_reports_each_filesystem_once() {
        // Two mounts of one filesystem (a second mount of the root's, two
        // btrfs subvolumes) count once; a shadowed mount and pseudo
        // filesystems not at all; an escaped space is undone; NFS counts.
        let d = table("several-disks");
        assert_eq!(
            mounts(&d),
            [
                ("/", "ext4"),
                ("/home", "btrfs"),
                ("/mnt/backup disk", "ext4"),
                ("/mnt/nfs", "nfs4"),
                ("/srv", "xfs")
            ]
        );
    }

    #[test]
    fn unescape_undoes_the_kernels_octal_escapes() {
        assert_eq!(unescape(r"/mnt/a\040b\011c\134d"), "/mnt/a b\tc\\d");
        assert_eq!(unescape(r"/mnt/trailing\04"), r"/mnt/trailing\04");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn paths_under_a_host_root() {
        let root = Some(Path::new("/host"));
        assert_eq!(table_path(root), Path::new("/host/proc/1/mountinfo"));
        assert_eq!(table_path(None), Path::new("/proc/self/mountinfo"));
        assert_eq!(under_root(root, "/"), Path::new("/host/"));
        assert_eq!(under_root(root, "/data"), Path::new("/host/data"));
        assert_eq!(under_root(None, "/data"), Path::new("/data"));
    }

    /// A host root whose table has no `/` (a chroot's): the root is
    /// still reported, with its type from statfs and its usage.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_root_that_is_not_a_mount_point_is_reported_from_statfs() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("proc/1")).unwrap();
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mountinfo/chroot");
        std::fs::copy(fixture, root.path().join("proc/1/mountinfo")).unwrap();
        let d = read(Some(root.path())).unwrap();
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].mount, "/");
        assert_ne!(d[0].fs_type, "", "{d:?}");
        let (total, _) = usage(&under_root(Some(root.path()), &d[0].mount)).unwrap();
        assert!(total > 0);
        // A host root without a mount table is an error that names it.
        let empty = tempfile::tempdir().unwrap();
        let e = read(Some(empty.path())).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_hung_statvfs_leaves_its_mount_out_until_it_returns() {
        use std::sync::atomic::AtomicUsize;
        // A mount whose stat blocks until the gate opens, as statvfs on a
        // hard NFS mount whose server is gone; the others answer at once.
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let calls = Arc::new(AtomicUsize::new(0));
        let probe = {
            let (gate, calls) = (gate.clone(), calls.clone());
            UsageProbe::with(Duration::from_millis(50), move |p| {
                if p == Path::new("/hung") {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let (open, cv) = &*gate;
                    let mut g = open.lock().unwrap();
                    while !*g {
                        g = cv.wait(g).unwrap();
                    }
                }
                (p != Path::new("/gone")).then_some((100, 40))
            })
        };
        assert_eq!(probe.usage(Path::new("/ok")), Usage::Bytes(100, 40));
        assert_eq!(probe.usage(Path::new("/gone")), Usage::Unavailable);
        let t = std::time::Instant::now();
        assert_eq!(probe.usage(Path::new("/hung")), Usage::Stuck);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert!(probe.is_stuck(Path::new("/hung")));
        // Skipped while its call is blocked: no second call, no waiting.
        let t = std::time::Instant::now();
        assert_eq!(probe.usage(Path::new("/hung")), Usage::Stuck);
        assert!(t.elapsed() < Duration::from_millis(40), "{:?}", t.elapsed());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(probe.usage(Path::new("/ok")), Usage::Bytes(100, 40));

        // The server comes back: the blocked call returns, and the mount
        // is asked (and reported) again.
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while probe.is_stuck(Path::new("/hung")) {
            assert!(std::time::Instant::now() < deadline, "never unstuck");
            std::thread::yield_now();
        }
        assert_eq!(probe.usage(Path::new("/hung")), Usage::Bytes(100, 40));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn several_hung_mounts_cost_one_timeout_together() {
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let probe = {
            let gate = gate.clone();
            UsageProbe::with(Duration::from_millis(300), move |p| {
                if p.starts_with("/nfs") {
                    let (open, cv) = &*gate;
                    let mut g = open.lock().unwrap();
                    while !*g {
                        g = cv.wait(g).unwrap();
                    }
                }
                Some((10, 5))
            })
        };
        let paths: Vec<PathBuf> = ["/", "/nfs/a", "/nfs/b", "/nfs/c", "/data"]
            .iter()
            .map(PathBuf::from)
            .collect();
        let t = std::time::Instant::now();
        let got = probe.usage_all(&paths);
        let took = t.elapsed();
        use Usage::*;
        assert_eq!(got, [Bytes(10, 5), Stuck, Stuck, Stuck, Bytes(10, 5)]);
        // One shared deadline: about 300 ms, not 900.
        assert!(took < Duration::from_millis(800), "{took:?}");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_real_probe_reads_the_root() {
        let probe = UsageProbe::new(DEFAULT_MOUNT_TIMEOUT);
        match probe.usage(Path::new("/")) {
            Usage::Bytes(total, available) => assert!(total > 0 && available <= total),
            other => panic!("{other:?}"),
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn read_always_has_the_root_and_its_usage() {
        let d = read(None).unwrap();
        assert_eq!(d.iter().filter(|d| d.mount == "/").count(), 1, "{d:?}");
        let (total, avail) = usage(Path::new("/")).unwrap();
        assert!(total > 0 && avail <= total);
        // A host root that is this machine's own root reads the same
        // table as PID 1 sees it.
        let under = read(Some(Path::new("/")));
        if let Ok(under) = under {
            assert!(under.iter().any(|d| d.mount == "/"));
        }
    }
}
