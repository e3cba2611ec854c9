//! Spawned processes in tests: signals, bounded waits and memory readings.
use std::time::Duration;

/// Sends SIGTERM to a spawned process.
pub fn send_sigterm(child: &std::process::Child) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits (bounded, about 30 s) for a spawned process to exit; kills it and fails the test if it
/// does not.
pub fn wait_for_exit(child: &mut std::process::Child, what: &str) -> std::process::ExitStatus {
    for _ in 0..3000 {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    panic!("{what} did not exit");
}

/// The resident set size of process `pid` in KiB (the `VmRSS` line of `/proc/PID/status`).
///
/// # Panics
/// When the process is gone or the line is missing.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|error| panic!("cannot read the status of process {pid}: {error}"))
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS line for process {pid}"))
}
