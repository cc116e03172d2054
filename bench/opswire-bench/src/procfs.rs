//! CPU time and memory of a process, from `/proc/<pid>`.

use std::time::Instant;

/// One reading of a process.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_kib: u64,
    pub at: Instant,
}

/// Clock ticks per second (`_SC_CLK_TCK`).
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// `pid` = None reads this process (`/proc/self`).
pub fn sample(pid: Option<u32>) -> Option<Sample> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_owned(),
    };
    let at = Instant::now();
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    Some(Sample {
        cpu_ticks: cpu_ticks(&stat)?,
        rss_kib: rss_kib(&status)?,
        at,
    })
}

/// utime + stime from a `/proc/<pid>/stat` line. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after the
/// last `)`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn rss_kib(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// CPU use between two samples, in % of one core.
pub fn cpu_pct(a: &Sample, b: &Sample) -> f64 {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    let secs = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / clk_tck() as f64;
    (secs / wall * 1000.0).round() / 10.0
}

/// The whole machine's CPU time from `/proc/stat`: (busy, total) clock
/// ticks over every core, busy = everything but idle and iowait.
#[derive(Clone, Copy, Debug)]
pub struct MachineSample {
    pub busy: u64,
    pub total: u64,
    /// Cores online (the `cpuN` lines; this process's affinity aside).
    pub cores: usize,
}

pub fn machine() -> Option<MachineSample> {
    machine_from(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn machine_from(stat: &str) -> Option<MachineSample> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already inside user.
    let total: u64 = f.iter().take(8).sum();
    let idle = f.get(3)? + f.get(4).copied().unwrap_or(0);
    let cores = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some(MachineSample {
        busy: total - idle,
        total,
        cores: cores.max(1),
    })
}

/// Busy CPU between two machine samples, in % of one core (up to cores × 100).
pub fn machine_pct(a: &MachineSample, b: &MachineSample) -> f64 {
    let cores = b.cores;
    let total = b.total.saturating_sub(a.total);
    if total == 0 {
        return 0.0;
    }
    let busy = b.busy.saturating_sub(a.busy) as f64 / total as f64;
    (busy * cores as f64 * 1000.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_busy_share() {
        let a =
            machine_from("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\ncpu1 1 2 3 4\n").unwrap();
        let b = machine_from("cpu  300 0 150 1000 50 0 100 0 0 0\ncpu0 1\ncpu1 2\n").unwrap();
        assert_eq!((a.busy, a.total, a.cores), (150, 1000, 2));
        // 400 of 600 ticks busy on 2 cores: 133.3 % of one core.
        assert_eq!(machine_pct(&a, &b), 133.3);
        assert!(machine().is_some());
    }

    #[test]
    fn parses_stat_with_an_awkward_name() {
        let stat = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 5 0 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert!(sample(None).is_some_and(|s| s.rss_kib > 0));
    }
}
