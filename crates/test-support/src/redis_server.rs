//! A real `redis-server` (the Debian package) on a loopback port of the test's own, without
//! persistence, stopped (SIGKILL) when dropped and restartable on the same port.
use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    extra_args: Vec<String>,
    tls: bool,
}

/// How a [`RedisServer`] is secured: TLS with a certificate and key (PEM files), and an ACL
/// user with a password (the default user is then turned off).
#[derive(Debug, Clone, Default)]
pub struct RedisSecurity {
    /// Server certificate and key files; clients are not asked for certificates.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// ACL user name and password.
    pub user: Option<(String, String)>,
}

/// Where the `redis-server` binary is: `WS_PROXY_TEST_REDIS_SERVER`, else on `PATH`.
pub fn redis_server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WS_PROXY_TEST_REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join("redis-server"))
        .find(|candidate| candidate.is_file())
}

impl RedisServer {
    /// Starts `redis-server` on a free loopback port and waits until it answers PING.
    ///
    /// # Panics
    /// When the binary is missing (install the `redis-server` package) or it does not answer
    /// within 10 s.
    pub fn start() -> Self {
        Self::start_secured(&RedisSecurity::default())
    }

    /// [`start`](Self::start) with TLS and/or an ACL user.
    pub fn start_secured(security: &RedisSecurity) -> Self {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .map(|address| address.port())
            .unwrap_or_else(|error| panic!("no free port: {error}"));
        let port_text = port.to_string();
        let mut extra_args: Vec<String> = match &security.tls {
            None => vec!["--port".into(), port_text],
            Some((certificate, key)) => vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port_text,
                "--tls-cert-file".into(),
                certificate.display().to_string(),
                "--tls-key-file".into(),
                key.display().to_string(),
                "--tls-auth-clients".into(),
                "no".into(),
            ],
        };
        if let Some((user, password)) = &security.user {
            // Each word of the ACL rule is its own argument.
            extra_args.extend(["--user".into(), user.clone(), "on".into()]);
            extra_args.push(format!(">{password}"));
            extra_args.extend(["~*", "&*", "+@all", "--user", "default", "off"].map(String::from));
        }
        let mut server = Self {
            child: None,
            port,
            extra_args,
            tls: security.tls.is_some(),
        };
        server.restart();
        server
    }

    /// `redis://127.0.0.1:{port}`, or `rediss://localhost:{port}` with TLS.
    pub fn url(&self) -> String {
        if self.tls {
            format!("rediss://localhost:{}", self.port)
        } else {
            format!("redis://127.0.0.1:{}", self.port)
        }
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (after [`stop`](Self::stop)).
    pub fn restart(&mut self) {
        self.stop();
        let binary = redis_server_binary().unwrap_or_else(|| {
            panic!("redis-server is not installed (apt-get install redis-server, or set WS_PROXY_TEST_REDIS_SERVER)")
        });
        let child = Command::new(binary)
            .args(["--bind", "127.0.0.1"])
            .args(&self.extra_args)
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start redis-server: {error}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.is_up() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Plain: answers PING (or asks for a password first). TLS: accepts connections.
    fn is_up(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200))
        else {
            return false;
        };
        if self.tls {
            return true;
        }
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && (&reply == b"+PONG\r\n" || reply.starts_with(b"-NOAUTH"))
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
