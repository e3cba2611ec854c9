//! A network namespace joined to the host by a veth pair, for fault-injection tests (root
//! only): processes run inside it with [`Netns::command`], and [`Netns::blackhole`] drops a
//! TCP port's packets inside it with iptables (no FIN, no RST: as if the peer's host vanished).
//! Everything is removed on drop.
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::atomic::{AtomicU8, Ordering};

static NEXT: AtomicU8 = AtomicU8::new(1);

/// A namespace with `10.X.Y.2/24` inside and `10.X.Y.1` on the host side.
#[derive(Debug)]
pub struct Netns {
    name: String,
    host_veth: String,
    /// The host side's address (reachable from inside).
    pub host_addr: Ipv4Addr,
    /// The address inside the namespace (reachable from the host).
    pub inner_addr: Ipv4Addr,
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("cannot run {command:?}: {error}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn ip(args: &[&str]) {
    run(Command::new("ip").args(args));
}

impl Netns {
    /// Creates the namespace and its link.
    ///
    /// # Panics
    /// Without root, `ip` or `iptables`.
    pub fn create() -> Self {
        let number = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let name = format!("wsp-{pid}-{number}");
        let host_veth = format!("wsp{}h{number}", pid % 100_000);
        let inner_veth = format!("wsp{}n{number}", pid % 100_000);
        let second = 100 + (pid % 100) as u8;
        let host_addr = Ipv4Addr::new(10, second, number, 1);
        let inner_addr = Ipv4Addr::new(10, second, number, 2);
        ip(&["netns", "add", &name]);
        let netns = Self {
            name,
            host_veth,
            host_addr,
            inner_addr,
        };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        ip(&[
            "link",
            "add",
            &netns.host_veth,
            "type",
            "veth",
            "peer",
            "name",
            &inner_veth,
        ]);
        ip(&["link", "set", &inner_veth, "netns", &netns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{host_addr}/24"),
            "dev",
            &netns.host_veth,
        ]);
        ip(&["link", "set", &netns.host_veth, "up"]);
        ip(&[
            "-n",
            &netns.name,
            "addr",
            "add",
            &format!("{inner_addr}/24"),
            "dev",
            &inner_veth,
        ]);
        ip(&["-n", &netns.name, "link", "set", &inner_veth, "up"]);
        netns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    fn iptables(&self, rule: &[&str]) {
        run(self.command("iptables").args(rule));
    }

    /// Drops every TCP packet to or from `port` (either end) inside the namespace, silently.
    pub fn blackhole(&self, port: u16) {
        let port = port.to_string();
        for chain in ["INPUT", "OUTPUT"] {
            for direction in ["--sport", "--dport"] {
                self.iptables(&["-A", chain, "-p", "tcp", direction, &port, "-j", "DROP"]);
            }
        }
    }

    /// Removes every blackhole.
    pub fn restore(&self) {
        for chain in ["INPUT", "OUTPUT"] {
            self.iptables(&["-F", chain]);
        }
    }

    /// The namespace's established TCP connections to or from `port`, as `ss` lists them.
    pub fn established(&self, port: u16) -> usize {
        let output = self
            .command("ss")
            .args(["-Htn", "state", "established"])
            .output()
            .unwrap();
        let port = format!(":{port}");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.split_whitespace().any(|field| field.ends_with(&port)))
            .count()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .output();
    }
}
