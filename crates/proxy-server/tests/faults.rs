//! Network fault injection through the real binary (`faults/test.sh` runs these; they need
//! root for network namespaces): blackholed peers, a slow, delayed and paused upstream link, an
//! upstream reset or killed, rotated upstream credentials, a browser that stops reading, file
//! descriptor exhaustion, and SIGTERM with 500 live sessions. Every test is bounded in time and
//! cleans up its namespaces and processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use test_support::impair::{ImpairedLink, Impairment};
use test_support::netns::Netns;
use test_support::process::rss_kib;

/// Fast keepalives on both legs, so blackholes are noticed within seconds.
const FAST_KEEPALIVE: [(&str, &str); 6] = [
    ("SECRET_KEY", SECRET),
    ("WS_PROXY_KEEPALIVE_INTERVAL", "1s"),
    ("WS_PROXY_KEEPALIVE_TIMEOUT", "1s"),
    ("WS_PROXY_UPSTREAM_KEEPALIVE_INTERVAL", "1s"),
    ("WS_PROXY_UPSTREAM_KEEPALIVE_TIMEOUT", "1s"),
    ("WS_PROXY_CLOSE_TIMEOUT", "1s"),
];

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// User plus system CPU time of a process.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

async fn console(addr: SocketAddr, vm: &str) -> Client {
    let (mut client, _) = connect(addr, &format!("/{}/{vm}", mint(&[vm])), "")
        .await
        .unwrap();
    assert_eq!(next_data(&mut client).await, GREETING);
    client
}

/// A proxy inside a fresh namespace that reaches the upstream through an impairment relay on
/// the host side of the link.
struct Partitioned {
    netns: Netns,
    link: ImpairedLink,
    proxy: ProxyProcess,
    _upstream: KubevirtUpstream,
}

impl Partitioned {
    async fn start(extra: &[(&str, &str)]) -> Self {
        let upstream = KubevirtUpstream::start().await;
        let netns = Netns::create();
        let link = ImpairedLink::start(SocketAddr::from((netns.host_addr, 0)), upstream.addr).await;
        let inner = netns.inner_addr.to_string();
        let env = [
            FAST_KEEPALIVE.as_slice(),
            &[("HOST", inner.as_str())],
            extra,
        ]
        .concat();
        let proxy = ProxyProcess::start_wrapped(
            &["/usr/sbin/ip", "netns", "exec", netns.name()],
            &format!("ws://{}", link.addr),
            &env,
        );
        Self {
            netns,
            link,
            proxy,
            _upstream: upstream,
        }
    }
}

#[tokio::test]
#[ignore = "needs root (network namespaces): faults/test.sh runs these"]
async fn a_blackholed_upstream_ends_the_session_within_the_keepalive_bound() {
    let rig = Partitioned::start(&[]).await;
    let mut client = console(rig.proxy.addr, "ubuntu").await;
    echo_round_trip(&mut client, b"before").await;
    assert_eq!(rig.netns.established(rig.link.addr.port()), 1);

    let started = Instant::now();
    rig.netns.blackhole(rig.link.addr.port());
    let close = tokio::time::timeout(Duration::from_secs(10), next_close(&mut client))
        .await
        .expect("no close within 10 s");
    let took = started.elapsed();
    assert_eq!(
        close,
        Some((1011, "upstream keepalive ping timeout".to_owned()))
    );
    // Keepalive 1 s + 1 s: the next ping is due within 1 s, its pong within 1 s more.
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    // The proxy let go of its upstream socket (no FIN or RST could pass).
    let mut gone = false;
    for _ in 0..50 {
        if rig.netns.established(rig.link.addr.port()) == 0 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the proxy still holds its upstream connection");
    rig.netns.restore();
    rig.proxy.stop_with_sigterm().await;
}

#[tokio::test]
#[ignore = "needs root (network namespaces): faults/test.sh runs these"]
async fn a_blackholed_browser_closes_the_upstream_within_the_keepalive_bound_and_leaks_nothing() {
    let rig = Partitioned::start(&[]).await;
    let pid = rig.proxy.child.id();
    let baseline_fds = open_fds(pid);
    let mut client = console(rig.proxy.addr, "ubuntu").await;
    echo_round_trip(&mut client, b"before").await;

    let closes_before = rig._upstream.closes().len();
    let started = Instant::now();
    rig.netns.blackhole(rig.proxy.addr.port());
    let mut closed = false;
    while started.elapsed() < Duration::from_secs(10) {
        if rig._upstream.closes().len() > closes_before {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = started.elapsed();
    assert!(closed, "the upstream was not closed within 10 s");
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    assert_eq!(
        rig._upstream.closes().last().cloned().flatten(),
        Some((1001, "keepalive ping timeout".to_owned()))
    );
    // No session and no descriptor is left once the close timeout passed.
    let mut fds = usize::MAX;
    for _ in 0..50 {
        fds = open_fds(pid);
        if fds <= baseline_fds {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        fds <= baseline_fds,
        "{fds} descriptors open, {baseline_fds} before"
    );
    rig.netns.restore();
    drop(client);
    rig.proxy.stop_with_sigterm().await;
}

#[tokio::test]
#[ignore = "needs root (network namespaces): faults/test.sh runs these"]
async fn a_slow_delayed_and_paused_upstream_link_delivers_64_mib_each_way_intact() {
    // Default keepalives: the 2 s pause hears nothing from either peer, which the fast test
    // keepalives would count as a dead peer. (Behind the saturated link a pong waits for seconds
    // of data queued before it; that data answers the ping, see docs/relay.md.)
    let rig = Partitioned::start(&[
        ("WS_PROXY_KEEPALIVE_INTERVAL", "20s"),
        ("WS_PROXY_KEEPALIVE_TIMEOUT", "20s"),
        ("WS_PROXY_UPSTREAM_KEEPALIVE_INTERVAL", "20s"),
        ("WS_PROXY_UPSTREAM_KEEPALIVE_TIMEOUT", "20s"),
    ])
    .await;
    // 100 ms each way and 10 Mbit/s; the link stops for 2 s in the middle of the transfer.
    rig.link.set(Impairment {
        delay: Duration::from_millis(100),
        rate: Some(10_000_000 / 8),
        paused: false,
    });
    let mut client = console(rig.proxy.addr, "ubuntu").await;
    echo_round_trip(&mut client, b"console works through the slow link").await;
    const TOTAL: usize = 64 << 20;
    let started = Instant::now();
    let pause = async {
        tokio::time::sleep(Duration::from_secs(15)).await;
        rig.link.set(Impairment {
            delay: Duration::from_millis(100),
            rate: Some(10_000_000 / 8),
            paused: true,
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        rig.link.set(Impairment {
            delay: Duration::from_millis(100),
            rate: Some(10_000_000 / 8),
            paused: false,
        });
    };
    let exchange = tokio::time::timeout(
        Duration::from_secs(150),
        test_support::checksums::exchange(&mut client, 64, TOTAL),
    );
    let ((sent, received), ()) = tokio::join!(
        async { exchange.await.expect("transfer not done in 150 s") },
        pause
    );
    assert_eq!(sent, received, "the echoed stream differs");
    assert_eq!(received.length, TOTAL as u64);
    println!(
        "64 MiB each way through 100 ms / 10 Mbit/s with a 2 s pause: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    echo_round_trip(&mut client, b"still a console").await;
    rig.proxy.stop_with_sigterm().await;
}

#[tokio::test]
#[ignore = "needs root (network namespaces): faults/test.sh runs these"]
async fn an_upstream_reset_mid_stream_ends_the_session_with_a_reason() {
    let upstream = KubevirtUpstream::start().await;
    let link = ImpairedLink::start("127.0.0.1:0".parse().unwrap(), upstream.addr).await;
    let proxy = ProxyProcess::start_with_url(&format!("ws://{}", link.addr), &FAST_KEEPALIVE);
    let mut client = console(proxy.addr, "ubuntu").await;
    let mut other = console(proxy.addr, "kali").await;
    link.reset_all();
    let close = tokio::time::timeout(Duration::from_secs(5), next_close(&mut client))
        .await
        .unwrap();
    assert!(
        matches!(
            &close,
            Some((1011, reason)) if reason == "upstream connection error"
        ) || matches!(&close, Some((1001, reason)) if reason == "upstream went away"),
        "{close:?}"
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), next_close(&mut other)).await;
    // A new session opens at once.
    let mut again = console(proxy.addr, "ubuntu").await;
    echo_round_trip(&mut again, b"after the reset").await;
    proxy.stop_with_sigterm().await;
}

/// `kubevirt-sim` as its own process (`KUBEVIRT_SIM_BIN`, which `faults/test.sh` builds).
struct SimProcess {
    child: std::process::Child,
    addr: SocketAddr,
}

impl SimProcess {
    fn start(args: &[&str]) -> Self {
        use std::io::BufRead as _;
        let binary = std::env::var("KUBEVIRT_SIM_BIN")
            .expect("KUBEVIRT_SIM_BIN: the kubevirt-sim binary (faults/test.sh builds it)");
        let mut child = std::process::Command::new(binary)
            .args(["--vm", &format!("{NAMESPACE}/ubuntu=echo")])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap()
            .parse()
            .unwrap();
        Self { child, addr }
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn greeted(addr: SocketAddr) -> Client {
    // The process simulator sends no greeting: a message round trip proves the console.
    let (mut client, _) = connect(addr, &format!("/{}/ubuntu", mint(&["ubuntu"])), "")
        .await
        .unwrap();
    echo_round_trip(&mut client, b"hello").await;
    client
}

#[tokio::test]
#[ignore = "needs root (network namespaces): faults/test.sh runs these"]
async fn a_killed_upstream_process_ends_the_session_and_the_next_dial_is_a_502() {
    let mut sim = SimProcess::start(&[]);
    let proxy = ProxyProcess::start_with_url(&format!("ws://{}", sim.addr), &FAST_KEEPALIVE);
    let mut client = greeted(proxy.addr).await;
    sim.child.kill().unwrap();
    sim.child.wait().unwrap();
    let close = tokio::time::timeout(Duration::from_secs(5), next_close(&mut client))
        .await
        .unwrap();
    assert_eq!(close, Some((1001, "upstream went away".to_owned())));
    assert_eq!(
        refused(proxy.addr, &format!("/{}/ubuntu", mint(&["ubuntu"])), "").await,
        (502, "upstream unavailable".to_owned())
    );
    proxy.stop_with_sigterm().await;
}

#[tokio::test]
#[ignore = "needs root (network namespaces): faults/test.sh runs these"]
async fn rotated_upstream_certificates_and_service_account_tokens_are_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    let sim_token = dir.path().join("sim-token");
    let proxy_token = dir.path().join("proxy-token");
    std::fs::write(&sim_token, "token-one").unwrap();
    std::fs::write(&proxy_token, "token-one").unwrap();
    let sim_args = |ca: &std::path::Path, token: &std::path::Path| {
        vec![
            "--tls-ca-out".to_owned(),
            ca.display().to_string(),
            "--token-file".to_owned(),
            token.display().to_string(),
        ]
    };
    let args = sim_args(&ca, &sim_token);
    let sim = SimProcess::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let port = sim.addr.port().to_string();
    let (ca_text, token_text) = (ca.display().to_string(), proxy_token.display().to_string());
    let mut proxy = ProxyProcess::start_wrapped(
        &[],
        "ws://unused",
        &[
            ("SECRET_KEY", SECRET),
            ("LOCAL_DEV_MODE", "false"),
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
            ("KUBERNETES_SERVICE_PORT", port.as_str()),
            ("WS_PROXY_CA_FILE", ca_text.as_str()),
            ("WS_PROXY_TOKEN_FILE", token_text.as_str()),
            ("WS_PROXY_DRAIN_TIMEOUT", "500ms"),
        ],
    );
    let mut first = greeted(proxy.addr).await;

    // The service-account token rotates during a burst of set-ups as bound tokens do: the API
    // server takes the new token before the kubelet writes it and the old one until it expires;
    // the proxy sends whichever its file holds at each dial, and no session fails.
    let burst = (0..60).map(|i| {
        let addr = proxy.addr;
        async move {
            tokio::time::sleep(Duration::from_millis(i * 10)).await;
            try_open(addr).await
        }
    });
    // Files are replaced whole (written beside, then renamed), as the kubelet does.
    let replace = |path: &std::path::Path, text: &str| {
        let staged = path.with_extension("new");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, path).unwrap();
    };
    let rotate = async {
        replace(&sim_token, "token-one\ntoken-two\n");
        tokio::time::sleep(Duration::from_millis(200)).await;
        replace(&proxy_token, "token-two");
        tokio::time::sleep(Duration::from_millis(200)).await;
        // The old token expired: from now on only the new one opens consoles.
        replace(&sim_token, "token-two");
    };
    let (results, ()) = tokio::join!(futures_util::future::join_all(burst), rotate);
    let failed: Vec<_> = results.iter().filter(|result| result.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 60 set-ups failed: {failed:?}",
        failed.len()
    );
    proxy.wait_for_line("reloaded changed credential file");

    // The API server's certificate (here: its whole CA) is rotated between sessions: a new
    // server on the same address with a new CA written to the same file. The session of the
    // old server ends with it; the next session trusts the new CA without a proxy restart.
    drop(results);
    echo_round_trip(&mut first, b"open session").await;
    drop(sim);
    let _ = next_close(&mut first).await;
    let listen = format!("127.0.0.1:{port}");
    let mut args = sim_args(&ca, &sim_token);
    args.extend(["--listen".to_owned(), listen]);
    let _sim = SimProcess::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut after = greeted(proxy.addr).await;
    echo_round_trip(&mut after, b"new certificate").await;
    proxy.stop_with_sigterm().await;
}

async fn try_open(addr: SocketAddr) -> Result<(), String> {
    match connect(addr, &format!("/{}/ubuntu", mint(&["ubuntu"])), "").await {
        Ok((mut client, _)) => {
            echo_round_trip(&mut client, b"x").await;
            Ok(())
        }
        Err(error) => Err(error.to_string()),
    }
}

#[tokio::test]
#[ignore = "needs root (network namespaces): faults/test.sh runs these"]
async fn a_browser_that_stops_reading_holds_bounded_memory_and_slows_nobody_else() {
    let upstream = KubevirtUpstream::start().await;
    let proxy = ProxyProcess::start(
        &upstream,
        &[
            ("WS_PROXY_KEEPALIVE_INTERVAL", "0"),
            ("WS_PROXY_DRAIN_TIMEOUT", "500ms"),
        ],
    );
    let pid = proxy.child.id();
    let mut other = console(proxy.addr, "ubuntu").await;
    echo_round_trip(&mut other, b"warm").await;
    let before = rss_kib(pid);
    // Full-screen updates as fast as the proxy takes them (1280x800x4 bytes each), to a browser
    // that reads nothing.
    let (mut stalled, _) = connect(
        proxy.addr,
        &format!("/{}/{VM_SOURCE}", mint(&[VM_SOURCE])),
        "",
    )
    .await
    .unwrap();
    let mut samples = Vec::new();
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        samples.push(rss_kib(pid));
        // The other console is served meanwhile.
        echo_round_trip(&mut other, &test_support::pattern(64 << 10, 9)).await;
    }
    let peak = samples.iter().copied().max().unwrap();
    let growth = peak.saturating_sub(before);
    println!(
        "stalled reader: proxy RSS {before} KiB before, at most {peak} KiB during 3 s of full-screen updates (+{growth} KiB)"
    );
    // The relay holds at most one message per direction plus the socket buffers: a few
    // full-screen updates, not the VM's whole output.
    assert!(growth < 32 * 1024, "RSS grew by {growth} KiB");
    stalled.close(None).await.ok();
    drop(stalled);
    proxy.stop_with_sigterm().await;
}

#[tokio::test]
#[ignore = "needs root (network namespaces): faults/test.sh runs these"]
async fn out_of_file_descriptors_the_proxy_refuses_without_spinning_and_recovers() {
    let upstream = KubevirtUpstream::start().await;
    let url = upstream.url();
    let proxy = ProxyProcess::start_wrapped(
        &["prlimit", "--nofile=48:48"],
        &url,
        &[("SECRET_KEY", SECRET), ("WS_PROXY_DRAIN_TIMEOUT", "500ms")],
    );
    let pid = proxy.child.id();
    // Each console holds two descriptors: open them until the proxy has none left.
    let mut consoles = Vec::new();
    let mut waiting = Vec::new();
    for _ in 0..40 {
        let opened = tokio::time::timeout(
            Duration::from_secs(2),
            connect(proxy.addr, &format!("/{}/ubuntu", mint(&["ubuntu"])), ""),
        )
        .await;
        match opened {
            Ok(Ok((client, _))) => consoles.push(client),
            _ => {
                // Not served: the kernel holds it in the listen backlog, or it was refused.
                waiting.push(tokio::net::TcpStream::connect(proxy.addr).await);
            }
        }
    }
    assert!(
        consoles.len() < 40,
        "the descriptor limit was never reached"
    );
    assert!(!waiting.is_empty());
    // Out of descriptors, with clients waiting: the accept loop backs off instead of spinning.
    let cpu_before = cpu_time(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu = cpu_time(pid).saturating_sub(cpu_before);
    println!(
        "out of descriptors: {} consoles open, {} clients waiting, proxy CPU {cpu:?} in 2 s",
        consoles.len(),
        waiting.len()
    );
    assert!(
        cpu < Duration::from_millis(500),
        "the proxy used {cpu:?} of CPU in 2 s"
    );
    // Once the clients leave, consoles open again.
    drop(waiting);
    for mut client in consoles.drain(..) {
        client.close(None).await.ok();
    }
    let mut recovered = None;
    for _ in 0..50 {
        if let Ok(Ok((client, _))) = tokio::time::timeout(
            Duration::from_secs(2),
            connect(proxy.addr, &format!("/{}/ubuntu", mint(&["ubuntu"])), ""),
        )
        .await
        {
            recovered = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut client = recovered.expect("no console after the clients left");
    assert_eq!(next_data(&mut client).await, GREETING);
    echo_round_trip(&mut client, b"recovered").await;
    proxy.stop_with_sigterm().await;
}

#[tokio::test]
#[ignore = "needs root (network namespaces): faults/test.sh runs these"]
async fn sigterm_with_500_live_sessions_closes_every_one_by_the_drain_deadline() {
    const SESSIONS: usize = 500;
    rlimit::increase_nofile_limit(8192).unwrap();
    let upstream = KubevirtUpstream::start().await;
    let mut proxy = ProxyProcess::start(
        &upstream,
        &[
            ("WS_PROXY_ADMIN_ADDR", "127.0.0.1:0"),
            ("WS_PROXY_DRAIN_TIMEOUT", "2s"),
            ("WS_PROXY_CLOSE_TIMEOUT", "2s"),
        ],
    );
    let admin = proxy.admin_addr();
    let pid = proxy.child.id();
    let mut clients = Vec::with_capacity(SESSIONS);
    for chunk in 0..SESSIONS / 50 {
        let opened =
            futures_util::future::join_all((0..50).map(|_| console(proxy.addr, "ubuntu"))).await;
        clients.extend(opened);
        let _ = chunk;
    }
    let metrics = get(admin, "/metrics").await.1;
    assert!(
        metrics.contains(&format!("ws_proxy_active_sessions {SESSIONS}")),
        "{metrics}"
    );
    let fds_with_sessions = open_fds(pid);

    let started = Instant::now();
    proxy.send_sigterm();
    // Readiness drops at once.
    let mut unready_after = None;
    for _ in 0..100 {
        if get(admin, "/readyz").await.0 == 503 {
            unready_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let unready_after = unready_after.expect("readiness never dropped");
    assert!(unready_after < Duration::from_secs(1), "{unready_after:?}");
    // Every session is closed with 1001 by the drain deadline (2 s) plus its close handshake.
    let closes = futures_util::future::join_all(clients.iter_mut().map(|client| async move {
        let close = next_close(client).await;
        (close, started.elapsed())
    }))
    .await;
    let mut latest = Duration::ZERO;
    for (close, at) in &closes {
        assert_eq!(
            close.as_ref().map(|(code, _)| *code),
            Some(1001),
            "{close:?}"
        );
        latest = latest.max(*at);
    }
    assert!(
        latest < Duration::from_secs(5),
        "the last close came after {latest:?}"
    );
    let status = tokio::task::spawn_blocking(move || proxy.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
    println!(
        "SIGTERM with {SESSIONS} sessions: unready after {unready_after:?}, last close after {latest:?}, {fds_with_sessions} descriptors before"
    );
    // Nothing leaked upstream: every console got its close.
    let mut upstream_closes = 0;
    for _ in 0..50 {
        upstream_closes = upstream.closes().len();
        if upstream_closes >= SESSIONS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(upstream_closes, SESSIONS);
    drop(clients);
}
