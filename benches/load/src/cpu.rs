//! CPU seconds spent by the server under test and by PostgreSQL over a
//! scenario's measured window, read from `/proc`.
//!
//! PostgreSQL is one postmaster and a process per backend. A backend that
//! exits during the window is reaped by the postmaster, and the kernel adds
//! its CPU time to the postmaster's `cutime`/`cstime`; so "the postmaster's
//! own and reaped children's time, plus every live child's" counted before
//! and after is the whole cluster's CPU, whichever backends came and went.

use std::collections::HashMap;

/// utime + stime (and, with `children`, cutime + cstime) of one process, in
/// clock ticks; None when it is gone or unreadable.
fn ticks(pid: u32, children: bool) -> Option<(u32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: fields are
    // counted from the last ')'. After it: state (3), ppid (4), ...,
    // utime (14), stime (15), cutime (16), cstime (17).
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ppid = field(4)? as u32;
    let mut sum = field(14)? + field(15)?;
    if children {
        sum += field(16)? + field(17)?;
    }
    Some((ppid, sum))
}

fn seconds(ticks: u64) -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / per_second
}

/// CPU ticks per live child of `parent`.
fn children_of(parent: u32) -> HashMap<u32, u64> {
    let mut found = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((ppid, sum)) = ticks(pid, false)
            && ppid == parent
        {
            found.insert(pid, sum);
        }
    }
    found
}

/// One reading of the server's and the cluster's CPU.
pub struct Reading {
    server: Option<u64>,
    postmaster: Option<u64>,
    backends: HashMap<u32, u64>,
}

pub fn read(server: Option<u32>, postmaster: Option<u32>) -> Reading {
    Reading {
        server: server.and_then(|pid| ticks(pid, false)).map(|(_, t)| t),
        postmaster: postmaster.and_then(|pid| ticks(pid, true)).map(|(_, t)| t),
        backends: postmaster.map(children_of).unwrap_or_default(),
    }
}

impl Reading {
    fn cluster(&self) -> Option<u64> {
        Some(self.postmaster? + self.backends.values().sum::<u64>())
    }

    /// CPU seconds from `self` to `later`: the server's, the whole
    /// cluster's, and that of the backends serving `pids` (the server's own
    /// connections, alive at the end; one that opened during the window
    /// counts from zero).
    pub fn until(&self, later: &Reading, pids: &[u32]) -> serde_json::Value {
        let diff = |a: Option<u64>, b: Option<u64>| Some(seconds(b?.saturating_sub(a?)));
        let own: u64 = pids
            .iter()
            .filter_map(|pid| {
                let end = later.backends.get(pid)?;
                Some(end.saturating_sub(self.backends.get(pid).copied().unwrap_or(0)))
            })
            .sum();
        serde_json::json!({
            "server_seconds": diff(self.server, later.server),
            "postgres_seconds": diff(self.cluster(), later.cluster()),
            "postgres_server_backends_seconds": later.postmaster.map(|_| seconds(own)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_its_parent() {
        let me = std::process::id();
        let (ppid, _) = ticks(me, true).expect("own stat readable");
        assert_eq!(ppid, std::os::unix::process::parent_id());
        assert!(children_of(ppid).contains_key(&me));
    }

    #[test]
    fn a_gone_process_reads_as_none() {
        assert!(ticks(u32::MAX - 1, false).is_none());
        let before = read(Some(u32::MAX - 1), None);
        let value = before.until(&read(Some(u32::MAX - 1), None), &[]);
        assert!(value["server_seconds"].is_null());
        assert!(value["postgres_seconds"].is_null());
    }
}
