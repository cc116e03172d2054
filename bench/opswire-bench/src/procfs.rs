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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_an_awkward_name() {
        let stat = "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0 5 0 0";
        assert_eq!(cpu_ticks(stat), Some(325));
        assert!(sample(None).is_some_and(|s| s.rss_kib > 0));
    }
}
