//! The bearer token must not show up in any log record (ours through `tracing`, rustls' through
//! `log`, both at trace level), error message, error chain or `Debug` output.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_upstream::{Connector, KubeVirtConnectorBuilder, UpstreamTarget};
use support::{TestPki, lab_vm, lab_vm_tls, start, write_token};

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXNlcnZpY2UtYWNjb3VudA.s3cr3t-signature";
const LAB_VM: UpstreamTarget<'static> = UpstreamTarget {
    namespace: "lab-1",
    vmi_name: "vm-a",
};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct LogCapture(Captured);

impl log::Log for LogCapture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let mut sink = self.0.clone();
        writeln!(
            sink,
            "{} {}: {}",
            record.level(),
            record.target(),
            record.args()
        )
        .unwrap();
    }
    fn flush(&self) {}
}

fn error_report(error: &dyn std::error::Error) -> String {
    let mut report = format!("{error} | {error:?}");
    let mut source = error.source();
    while let Some(cause) = source {
        report.push_str(&format!(" | {cause} | {cause:?}"));
        source = cause.source();
    }
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_appears_in_logs_errors_or_debug_output() {
    let captured = Captured::default();
    log::set_boxed_logger(Box::new(LogCapture(captured.clone()))).unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    let writer = captured.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();

    let pki = TestPki::new("cluster ca");
    let accepting = start(lab_vm_tls(&pki, TOKEN)).await;
    let refusing = start(lab_vm_tls(&pki, "another-token")).await;
    let untrusted =
        start(lab_vm().tls_server_config(TestPki::new("other ca").server_config())).await;

    let dir = tempfile::tempdir().unwrap();
    let token_path = write_token(dir.path(), TOKEN);
    let ca_path = pki.write_ca(dir.path());
    let builder_for = |port: u16| {
        KubeVirtConnectorBuilder::in_cluster_at("127.0.0.1", &port.to_string())
            .unwrap()
            .ca_file(&ca_path)
            .bearer_token_file(&token_path)
            .credential_refresh_interval(Duration::ZERO)
    };
    let mut report = String::new();

    let builder = builder_for(accepting.local_addr().port());
    report.push_str(&format!("{builder:?}"));
    let connector = builder.build().unwrap();
    report.push_str(&format!("{connector:?}"));
    let upstream = connector.connect(LAB_VM).await.unwrap();
    report.push_str(&format!("{:?}", upstream.subprotocol));

    for server in [&refusing, &untrusted] {
        let connector = builder_for(server.local_addr().port()).build().unwrap();
        let error = connector.connect(LAB_VM).await.unwrap_err();
        report.push_str(&error_report(&error));
    }

    // A vanished token file: the warning about keeping the last good token names the path only.
    std::fs::remove_file(&token_path).unwrap();
    connector.connect(LAB_VM).await.unwrap();
    // An unusable token file at build time.
    std::fs::write(&token_path, format!("{TOKEN}\u{1}")).unwrap();
    let build_error = builder_for(accepting.local_addr().port())
        .build()
        .unwrap_err();
    report.push_str(&error_report(&build_error));

    let logs = captured.text();
    assert!(
        logs.contains(" rustls::") && logs.contains("upstream WebSocket open"),
        "both log paths must have been captured:\n{logs}"
    );
    assert!(logs.contains("keeping the last good one"), "{logs}");
    assert!(!logs.contains(TOKEN), "token in a log record:\n{logs}");
    assert!(!logs.contains("s3cr3t"), "token in a log record:\n{logs}");
    assert!(
        !report.contains("s3cr3t"),
        "token in an error or Debug output:\n{report}"
    );
}
