//! Process groups that outlive the process that started them.
//!
//! A step runs in its own process group (see [`super::runner`]). When `deckhand serve` dies
//! (`kill -9`) the group lives on, reparented to init. Before another job may touch the
//! environment, a later process on the same host must know whether that group is still
//! there, and it must never signal a stranger's group that got the same number.
//!
//! *Gone* means what the kernel says: `kill(-pgid, 0)` fails with ESRCH, every member has
//! exited and been reaped. A killed member stays a zombie, still in its group, until its new
//! parent (init) reaps it; under an init that reaps once a second that is 1–1.5 s after the
//! kill, which is the overlap the old "SIGKILL and move on" recovery allowed.
//!
//! Pid reuse: the kernel does not hand a group's number to a new process while any member
//! of the group exists. So when the leader's pid now belongs to a process with another start
//! time, or the host has rebooted since, the group we recorded has ended. The leader's
//! identity is `BOOT_ID:START_TICKS` (`/proc/sys/kernel/random/boot_id`, and field 22 of
//! `/proc/PID/stat`, clock ticks since boot), read right after spawn while the leader is our
//! own unreaped child. Where `/proc` is missing the identity is `None` and only `kill` decides.

/// What is left of a process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// No member exists: `kill(-pgid, 0)` says ESRCH, or the number now names someone else.
    Gone,
    /// Only zombies are left: nothing runs, but init has not reaped them yet.
    OnlyZombies,
    /// At least one member can still run.
    Alive,
}

/// The identity of process `pid` (a group's leader) that a reused pid cannot share.
pub fn leader_identity(pid: i32) -> Option<String> {
    Some(format!("{}:{}", boot_id()?, start_ticks(pid)?))
}

/// Is the group `pgid` whose leader was `leader` (see [`leader_identity`]) still there?
pub fn probe(pgid: i32, leader: Option<&str>) -> Group {
    // 0 and 1 are never a step's group: kill(-1) would mean every process we may signal.
    if pgid <= 1 || leader.is_some_and(|l| !leader_matches(pgid, l)) {
        return Group::Gone;
    }
    // SAFETY: kill(2) with signal 0 sends nothing; it only checks that the group exists.
    let r = unsafe { libc::kill(-pgid, 0) };
    if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH) {
        return Group::Gone;
    }
    if only_zombies(pgid) {
        Group::OnlyZombies
    } else {
        Group::Alive
    }
}

/// Send `signal` to the group, unless it is gone or its number now names another group.
/// True when it was sent.
pub fn signal(pgid: i32, leader: Option<&str>, signal: i32) -> bool {
    if probe(pgid, leader) == Group::Gone {
        return false;
    }
    super::runner::kill_group(pgid, signal);
    true
}

/// Does `recorded` still describe the process whose pid is `pgid`? A leader that has exited
/// may have left members behind, and then the number is still theirs: that counts as a match.
fn leader_matches(pgid: i32, recorded: &str) -> bool {
    let Some((boot, ticks)) = recorded.split_once(':') else {
        return true;
    };
    if boot_id().is_some_and(|now| now != boot) {
        return false;
    }
    start_ticks(pgid).is_none_or(|t| t.to_string() == ticks)
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// The fields of `/proc/PID/stat` after the command name: `[0]` is the state (field 3).
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

fn start_ticks(pid: i32) -> Option<u64> {
    stat_fields(&pid.to_string())?.get(19)?.parse().ok()
}

/// Are all members of the group that `/proc` shows zombies (and at least one shown)? A
/// zombie leader whose other threads still run is not a zombie here.
fn only_zombies(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    let group = pgid.to_string();
    let mut seen = false;
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Some(f) = stat_fields(pid) else { continue };
        if f.get(2) != Some(&group) {
            continue;
        }
        seen = true;
        let threads = std::fs::read_dir(e.path().join("task")).map_or(1, |d| d.count());
        if !matches!(f[0].as_str(), "Z" | "X") || threads > 1 {
            return false;
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    fn leader() -> std::process::Child {
        std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_group_is_alive_then_a_zombie_then_gone_once_reaped() {
        let mut c = leader();
        let pgid = c.id() as i32;
        let id = leader_identity(pgid).expect("this test needs /proc");
        assert_eq!(probe(pgid, Some(&id)), Group::Alive);
        assert!(signal(pgid, Some(&id), libc::SIGKILL));
        // Killed but not reaped (we are its parent and have not waited): a zombie.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while probe(pgid, Some(&id)) == Group::Alive && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(probe(pgid, Some(&id)), Group::OnlyZombies);
        c.wait().unwrap();
        assert_eq!(probe(pgid, Some(&id)), Group::Gone);
        assert!(
            !signal(pgid, Some(&id), libc::SIGKILL),
            "nothing left to signal"
        );
    }

    #[test]
    fn a_reused_number_is_not_the_recorded_group_and_is_never_signalled() {
        let mut c = leader();
        let pgid = c.id() as i32;
        let id = leader_identity(pgid).unwrap();
        let (boot, ticks) = id.split_once(':').unwrap();
        let older = format!("{boot}:{}", ticks.parse::<u64>().unwrap().saturating_sub(1));
        let before_reboot = format!("00000000-0000-0000-0000-000000000000:{ticks}");
        for stranger in [older, before_reboot] {
            assert_eq!(probe(pgid, Some(&stranger)), Group::Gone, "{stranger}");
            assert!(!signal(pgid, Some(&stranger), libc::SIGKILL));
        }
        assert_eq!(probe(pgid, Some(&id)), Group::Alive, "still running");
        // Without an identity, only kill(2) decides.
        assert_eq!(probe(pgid, None), Group::Alive);
        c.kill().unwrap();
        c.wait().unwrap();
        assert_eq!(probe(pgid, None), Group::Gone);
    }

    #[test]
    fn groups_0_and_1_are_never_probed_or_signalled() {
        for g in [-5, 0, 1] {
            assert_eq!(probe(g, None), Group::Gone);
            assert!(!signal(g, None, 0));
        }
    }
}
