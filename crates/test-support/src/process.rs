//! Spawned processes in tests: signals and bounded waits.
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
