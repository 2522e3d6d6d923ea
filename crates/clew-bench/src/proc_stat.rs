//! CPU time and peak memory of a process, read from Linux's /proc (all threads included).

use anyhow::Context;

#[derive(Debug, Clone, Copy)]
pub struct ProcCpu {
    /// user + system time, seconds.
    pub cpu_seconds: f64,
    /// Peak resident set size (VmHWM), KiB.
    pub max_rss_kib: u64,
}

/// Clock ticks per second for /proc/*/stat times. Linux has reported USER_HZ = 100 to user space
/// on every mainstream architecture for decades.
const USER_HZ: f64 = 100.0;

impl ProcCpu {
    pub fn read(pid: u32) -> anyhow::Result<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat (is the server running?)"))?;
        Ok(ProcCpu {
            cpu_seconds: parse_stat_cpu(&stat).context("unexpected /proc/PID/stat format")?,
            max_rss_kib: std::fs::read_to_string(format!("/proc/{pid}/status"))
                .ok()
                .and_then(|s| parse_vm_hwm(&s))
                .unwrap_or(0),
        })
    }
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg has them ("?" elsewhere): printed
/// beside every figure taken on a shared machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// CPU seconds of the thread of `pid` named `name` (`/proc/PID/task/*/comm`); `None` when the
/// process has no such thread.
pub fn thread_cpu_seconds(pid: u32, name: &str) -> Option<f64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks.flatten().find_map(|t| {
        let comm = std::fs::read_to_string(t.path().join("comm")).ok()?;
        if comm.trim_end() != name {
            return None;
        }
        parse_stat_cpu(&std::fs::read_to_string(t.path().join("stat")).ok()?)
    })
}

/// utime (field 14) + stime (field 15); fields counted after the `(comm)` which may hold spaces.
fn parse_stat_cpu(stat: &str) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime is field 14 → index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_comm() {
        let s = "1234 (my (odd) proc) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 8 0";
        assert_eq!(parse_stat_cpu(s), Some(3.0));
        assert_eq!(parse_stat_cpu("garbage"), None);
        assert_eq!(parse_vm_hwm("Name:\tx\nVmHWM:\t  2048 kB\n"), Some(2048));
    }

    #[test]
    fn reads_own_process() {
        let c = ProcCpu::read(std::process::id()).unwrap();
        assert!(c.cpu_seconds >= 0.0);
        assert!(c.max_rss_kib > 0);
    }
}
