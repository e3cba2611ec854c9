//! Smoke runs of the quick configuration: direct and through the crate's TCP byte relay standing in
//! for the proxy. They check the report's structure and that every byte sent was counted on the
//! other side; they never check timings.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use loadgen::{
    KUBEVIRT_VNC_PATH, LoadgenError, Report, ScenarioConfig, Target, TargetKind, Unit,
    UpstreamServer,
};
use tokio::net::TcpListener;

/// The crate's byte relay, in-process: one upstream connection per client connection.
async fn start_relay(upstream: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(loadgen::byte_relay::serve_byte_relay(listener, upstream));
    addr
}

fn assert_bytes_balance(report: &Report) {
    for record in &report.records {
        let outcome = &record.outcome;
        let what = format!("{} on {}", record.scenario, record.target);
        assert!(
            outcome.completed,
            "{what} did not complete: {:?}",
            outcome.first_error
        );
        assert_eq!(outcome.errors, 0, "{what}: {:?}", outcome.first_error);
        assert_eq!(
            outcome.upstream_left_open, 0,
            "{what} left upstream connections open"
        );
        if record.scenario.starts_with("throughput upstream->client") {
            assert!(outcome.client_bytes_received > 0, "{what}");
            assert_eq!(
                outcome.client_bytes_received, outcome.upstream_bytes_sent,
                "{what}"
            );
        } else if record.scenario.starts_with("throughput client->upstream") {
            assert!(outcome.client_bytes_sent > 0, "{what}");
            assert_eq!(
                outcome.client_bytes_sent, outcome.upstream_bytes_received,
                "{what}"
            );
        } else if record.scenario.starts_with("class start") {
            // Each browser read its VM's RFB version and sent nothing.
            assert!(outcome.client_bytes_received > 0, "{what}");
            assert_eq!(
                outcome.client_bytes_received, outcome.upstream_bytes_sent,
                "{what}"
            );
            assert_eq!(outcome.upstream_bytes_received, 0, "{what}");
        } else if record.scenario.starts_with("steady") {
            // Bytes count inside the measurement window only: at most what the VMs sent, and
            // every key of the window went up.
            assert!(outcome.client_bytes_received > 0, "{what}");
            assert!(
                outcome.client_bytes_received <= outcome.upstream_bytes_sent,
                "{what}"
            );
            assert!(
                outcome.client_bytes_sent <= outcome.upstream_bytes_received,
                "{what}"
            );
        } else if !record
            .scenario
            .starts_with("upstream connections left open")
        {
            // Echo scenarios: every probe went up and came back.
            assert!(outcome.client_bytes_sent > 0, "{what}");
            assert_eq!(
                outcome.client_bytes_sent, outcome.upstream_bytes_received,
                "{what}"
            );
            assert_eq!(
                outcome.client_bytes_received, outcome.upstream_bytes_sent,
                "{what}"
            );
            assert_eq!(
                outcome.client_bytes_sent, outcome.client_bytes_received,
                "{what}"
            );
        }
    }
}

#[tokio::test]
async fn quick_run_direct_and_through_a_relay_counts_every_byte() {
    let upstream = UpstreamServer::start(
        "127.0.0.1:0".parse().unwrap(),
        &ScenarioConfig::quick().vmi_names(),
    )
    .await
    .unwrap();
    let relay = start_relay(upstream.local_addr()).await;
    let relay_template = format!("ws://{relay}{KUBEVIRT_VNC_PATH}");
    let targets = [
        Target::direct(&upstream.base_url()),
        Target::proxy(relay_template, None),
    ];
    let mut config = ScenarioConfig::quick();
    // Generous: the limit only guards against hangs, and debug builds share a busy machine.
    config.time_limit = Duration::from_secs(60);

    let report = loadgen::run_scenarios(&upstream, &targets, &config).await;

    assert!(report.quick);
    assert_bytes_balance(&report);
    let names: Vec<&str> = report.rows.iter().map(|row| row.metric.as_str()).collect();
    for expected in [
        "idle sessions x20 held and echoing",
        "throughput upstream->client 1 KiB x1",
        "throughput upstream->client 64 KiB x8",
        "throughput client->upstream 1 KiB x8",
        "throughput client->upstream 64 KiB x1",
        "round trip 16 B x1 p50",
        "round trip 16 B x10 p99",
        "round trip 16 B x10 p99.9",
        "session setup x1 loops",
        "session setup x1 loops: handshake p50",
        "session setup x1 loops: first echo p50",
        "session setup x1 loops: close until the end of the stream p50",
        "session setup x4 loops",
        "upstream connections left open after sessions ended",
    ] {
        assert!(
            names.contains(&expected),
            "missing row {expected} in {names:?}"
        );
    }
    for row in &report.rows {
        let median = &row.median;
        assert!(
            median.direct.is_some() && median.proxy.is_some(),
            "{} lacks a column",
            row.metric
        );
        assert!(median.socat.is_none() && median.byte_relay.is_none());
        if row.unit == Unit::Connections {
            assert_eq!((median.direct, median.proxy), (Some(0.0), Some(0.0)));
        } else if row.unit == Unit::Sessions {
            assert_eq!((median.direct, median.proxy), (Some(20.0), Some(20.0)));
        } else {
            assert!(
                row.proxy_ratio.direct.is_some(),
                "{} has no ratio",
                row.metric
            );
        }
    }
    // 1 idle + 8 throughput + 2 latency + 2 set-up + 1 class-start + 3 steady scenarios per
    // target, then the left-open totals.
    assert_eq!(report.records.len(), 2 * 17 + 2);

    let markdown = report.to_markdown();
    assert!(markdown.starts_with("| scenario | unit | direct | proxy | proxy/direct |\n"));
    assert_eq!(
        markdown
            .lines()
            .filter(|line| line.starts_with("| "))
            .count(),
        report.rows.len() + 1
    );
    let json: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), report.rows.len());
    assert_eq!(json["records"][0]["target"], "direct");
    assert_eq!(json["rows"][0]["unit"], "sessions");

    let stats = upstream.stats();
    assert_eq!(stats.open, 0);
    assert_eq!(stats.rejected, 0);
    // Direct clients offer plain.kubevirt.io like a proxy would; the relay passes it through too
    // only when its clients do, and the proxy target's clients do not.
    assert!(stats.subprotocol_offered > 0 && stats.subprotocol_offered < stats.handshakes);
}

#[tokio::test]
async fn unknown_vm_names_are_refused_before_the_upgrade() {
    let upstream = UpstreamServer::start(
        "127.0.0.1:0".parse().unwrap(),
        &ScenarioConfig::quick().vmi_names(),
    )
    .await
    .unwrap();
    let target = Target::direct(&upstream.base_url());
    let url = target.session_url("ns", "not-a-mode");
    let error = target.connect(&url, "not-a-mode").await.unwrap_err();
    let LoadgenError::Handshake {
        target: TargetKind::Direct,
        source,
        ..
    } = &error
    else {
        panic!("expected a handshake error, got {error:?}");
    };
    let tokio_tungstenite::tungstenite::Error::Http(response) = source.as_ref() else {
        panic!("expected an HTTP refusal, got {source:?}");
    };
    assert_eq!(response.status(), 404);
    assert_eq!(upstream.wait_until_idle(Duration::from_secs(5)).await, 0);
    assert_eq!(upstream.stats().rejected, 1);
}

#[test]
fn the_binary_writes_json_and_markdown_for_a_quick_direct_run() {
    let dir = tempfile::tempdir().unwrap();
    let json_path = dir.path().join("report.json");
    let markdown_path = dir.path().join("report.md");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args([
            "--quick",
            "--no-pin",
            "--no-socat",
            "--idle-sessions",
            "8",
            "--time-limit-secs",
            "20",
        ])
        .arg("--json")
        .arg(&json_path)
        .arg("--markdown")
        .arg(&markdown_path)
        .env("LOADGEN_LOG", "warn")
        .status()
        .unwrap();
    assert!(status.success());
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json_path).unwrap()).unwrap();
    assert_eq!(json["quick"], true);
    let rows = json["rows"].as_array().unwrap();
    // Every row has the direct column but the steady state's relay CPU, which only a relay
    // process has.
    assert!(rows.iter().all(|row| {
        let relay_only = ["% of a core", "consoles/core", "bytes/session"]
            .iter()
            .any(|unit| row["unit"] == *unit);
        row["median"]["direct"].is_number() != relay_only && row["median"]["proxy"].is_null()
    }));
    assert_eq!(rows[0]["metric"], "idle sessions x8 held and echoing");
    assert_eq!(rows[0]["median"]["direct"], 8.0);
    assert_eq!(rows[0]["rounds"]["direct"], serde_json::json!([8.0]));
    // The byte-relay binary beside loadgen is found and measured (not for idle sessions).
    let setup = rows
        .iter()
        .find(|row| row["metric"] == "session setup x1 loops")
        .unwrap();
    assert!(setup["median"]["byte_relay"].as_f64().unwrap() > 0.0);
    let markdown = std::fs::read_to_string(&markdown_path).unwrap();
    assert!(
        markdown.contains(
            "| upstream connections left open after sessions ended | connections | 0 | 0 |"
        )
    );
    assert!(markdown.contains("open-file limit: soft"));
}

/// A run against an external proxy (a plain relay in front of the upstream), with the byte
/// relay and, when `socat` is set, the socat column.
async fn external_proxy_run(socat: bool) -> Report {
    let upstream_port = loadgen::process::free_port().unwrap();
    let relay = start_relay(SocketAddr::from(([127, 0, 0, 1], upstream_port))).await;
    let mut scenarios = ScenarioConfig::quick();
    scenarios.idle_sessions = 4;
    scenarios.time_limit = Duration::from_secs(60);
    let mut options = loadgen::RunOptions::new(scenarios, loadgen::Secret::new("smoke-secret"));
    options.upstream_port = upstream_port;
    options.socat = socat;
    options.byte_relay = Some(env!("CARGO_BIN_EXE_byte-relay").into());
    // The relay forwards the request as is: the token rides in the query, which the upstream
    // records and ignores, and the path is KubeVirt's.
    options.proxy = loadgen::ProxyChoice::External {
        url_template: format!("ws://{relay}{KUBEVIRT_VNC_PATH}?token={{token}}"),
        pid: Some(std::process::id()),
    };
    let report = loadgen::run(&options).await.unwrap();
    assert_bytes_balance(&report);
    let json = report.to_json().unwrap();
    assert!(json.contains("{token}"), "templates are reported unfilled");
    // With a pid, the idle scenario reports memory per session for the proxy column.
    let memory = report
        .rows
        .iter()
        .find(|row| row.unit == Unit::BytesPerSession)
        .unwrap();
    assert!(memory.median.proxy.is_some() && memory.median.direct.is_none());
    report
}

fn kinds(report: &Report) -> Vec<TargetKind> {
    report.targets.iter().map(|target| target.kind).collect()
}

#[tokio::test]
async fn run_mints_tokens_for_an_external_proxy_and_adds_the_byte_relay() {
    let report = external_proxy_run(false).await;
    assert_eq!(
        kinds(&report),
        [TargetKind::Direct, TargetKind::ByteRelay, TargetKind::Proxy]
    );
    assert!(!report.notes.iter().any(|note| note.contains("socat")));
}

/// The socat column beside the others (`.ci/run` installs socat and runs this).
#[tokio::test]
#[ignore = "needs socat: .ci/run installs it and runs this"]
async fn run_adds_the_socat_column_between_direct_and_the_byte_relay() {
    assert!(
        loadgen::process::on_path("socat"),
        "socat is not installed (apt-get install -y socat)"
    );
    let report = external_proxy_run(true).await;
    assert_eq!(
        kinds(&report),
        [
            TargetKind::Direct,
            TargetKind::Socat,
            TargetKind::ByteRelay,
            TargetKind::Proxy
        ]
    );
}

/// The quick configuration through the real proxy engine (in process, built as the `ws-proxy`
/// binary builds it in dev mode): nothing lost, no error, no upstream connection left open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_run_through_ws_proxy_loses_nothing_and_closes_every_upstream() {
    let upstream_port = loadgen::process::free_port().unwrap();
    let proxy = proxy_server::WebsocketProxy::builder()
        .secret_key("smoke-secret")
        .local_dev_mode(true)
        .remote_url(format!("ws://127.0.0.1:{upstream_port}"))
        .build()
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        proxy
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    let mut scenarios = ScenarioConfig::quick();
    scenarios.time_limit = Duration::from_secs(60);
    let mut options = loadgen::RunOptions::new(scenarios, loadgen::Secret::new("smoke-secret"));
    options.upstream_port = upstream_port;
    options.socat = false;
    options.proxy = loadgen::ProxyChoice::External {
        url_template: format!("ws://{proxy_address}/{{token}}/{{vmi}}"),
        pid: None,
    };

    let report = loadgen::run(&options).await.unwrap();

    assert_bytes_balance(&report);
    let proxy_records = report
        .records
        .iter()
        .filter(|record| record.target == TargetKind::Proxy)
        .count();
    // 1 idle + 8 throughput + 2 latency + 2 set-up + 1 class-start + 3 steady scenarios, then
    // the left-open total.
    assert_eq!(proxy_records, 18);
    // The class of the quick configuration: 20 users with a token each, every console open.
    let class = report
        .rows
        .iter()
        .find(|row| {
            row.metric.starts_with("class start x20") && row.metric.ends_with("consoles open")
        })
        .unwrap();
    assert_eq!(class.median.proxy, Some(20.0));
    assert_eq!(class.median.direct, Some(20.0));
    let left_open = report
        .rows
        .iter()
        .find(|row| row.unit == Unit::Connections)
        .unwrap();
    assert_eq!(left_open.median.proxy, Some(0.0));
    stop.send(()).unwrap();
    serving.await.unwrap();
}

/// The `ws-proxy` binary of this workspace's build (`cargo test --workspace` builds it before
/// any test runs).
fn built_proxy_binary() -> Option<std::path::PathBuf> {
    let test_binary = std::env::current_exe().ok()?;
    let profile_dir = test_binary.parent()?.parent()?;
    let binary = profile_dir.join("ws-proxy");
    binary.exists().then_some(binary)
}

/// The in-cluster column: a second proxy process with `LOCAL_DEV_MODE=false`, the simulator
/// over TLS with a bearer check, the CA and token from files; its TLS sessions are resumed.
#[tokio::test]
async fn the_in_cluster_column_dials_over_tls_with_the_pod_files_and_resumes_sessions() {
    let Some(binary) = built_proxy_binary() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no ws-proxy binary beside the tests: cargo test --workspace builds it"
        );
        eprintln!("skipped: build the ws-proxy binary first (cargo build -p proxy-server)");
        return;
    };
    let mut scenarios = ScenarioConfig::quick();
    scenarios.idle_sessions = 0;
    scenarios.throughput.clear();
    scenarios.latency.clear();
    scenarios.steady.truncate(1);
    scenarios.time_limit = Duration::from_secs(60);
    let mut options = loadgen::RunOptions::new(scenarios, loadgen::Secret::new("smoke-secret"));
    options.socat = false;
    options.direct = false;
    options.proxy = loadgen::ProxyChoice::Spawn {
        binary,
        extra_env: Vec::new(),
        log_file: None,
    };
    options.in_cluster = true;

    let report = loadgen::run(&options).await.unwrap();

    let kinds: Vec<TargetKind> = report.targets.iter().map(|target| target.kind).collect();
    assert_eq!(kinds, [TargetKind::Proxy, TargetKind::ProxyInCluster]);
    let in_cluster: Vec<_> = report
        .records
        .iter()
        .filter(|record| record.target == TargetKind::ProxyInCluster)
        .collect();
    // Two set-up scenarios, the class start and one steady mix, then the left-open total.
    assert_eq!(in_cluster.len(), 5);
    for record in in_cluster {
        assert_eq!(record.outcome.errors, 0, "{}", record.scenario);
        assert!(record.outcome.completed, "{}", record.scenario);
        assert_eq!(record.outcome.upstream_left_open, 0, "{}", record.scenario);
    }
    let setup = report
        .rows
        .iter()
        .find(|row| row.metric == "session setup x1 loops")
        .unwrap();
    assert!(setup.median.proxy_in_cluster.unwrap() > 0.0);
    assert!(setup.in_cluster_ratio.is_some());
    let handshakes = report
        .notes
        .iter()
        .find(|note| note.contains("TLS handshakes with the API server"))
        .expect("the in-cluster proxy's handshake counts are reported");
    let counts: Vec<f64> = handshakes
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    let [full, resumed] = counts[..] else {
        panic!("{handshakes}")
    };
    assert!(full >= 1.0, "{handshakes}");
    assert!(resumed > full, "later sessions resume: {handshakes}");
}
