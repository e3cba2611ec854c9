//! `ws-proxy-demo`: the real binary with its in-process simulated KubeVirt API. A console URL it
//! prints opens an RFB 3.8 console through the proxy, the noVNC page and assets are served, and
//! SIGTERM stops everything with exit code 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proxy_server::proxy_auth::{self, Expiry, LabInstance, SigningKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const BINARY: &str = env!("CARGO_BIN_EXE_ws-proxy-demo");
/// Upper bound for any single step, so a broken demo fails the test instead of hanging it.
const STEP_LIMIT: Duration = Duration::from_secs(30);
const FAKE_RFB_JS: &str = "export default class RFB {}\n";

/// A running `ws-proxy-demo` whose stdout and stderr are collected line by line.
struct DemoProcess {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl DemoProcess {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BINARY)
            .args(["--listen", "127.0.0.1:0", "--page-listen", "127.0.0.1:0"])
            .args(args)
            .env_clear()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (sender, lines) = mpsc::channel();
        for output in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sender = sender.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines() {
                    let Ok(line) = line else { return };
                    let _ = sender.send(line);
                }
            });
        }
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a printed line that `wanted` accepts and returns it.
    fn wait_for_line(&mut self, wanted: impl Fn(&str) -> bool) -> String {
        if let Some(line) = self.seen.iter().find(|line| wanted(line)) {
            return line.clone();
        }
        loop {
            match self.lines.recv_timeout(STEP_LIMIT) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if wanted(&line) {
                        return line;
                    }
                }
                Err(_) => panic!("no such line; got:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The URL starting with `scheme` on the line listing `vm`.
    fn url(&mut self, scheme: &str, vm: &str) -> String {
        let line = self.wait_for_line(|line| {
            line.split_whitespace().next() == Some(vm) && line.contains(scheme)
        });
        line.split_whitespace()
            .find(|word| word.starts_with(scheme))
            .unwrap()
            .to_owned()
    }

    fn send_sigterm(&self) {
        test_support::process::send_sigterm(&self.child);
    }

    /// Waits (bounded) for the process to exit.
    fn wait(&mut self) -> ExitStatus {
        test_support::process::wait_for_exit(&mut self.child, "ws-proxy-demo")
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An RFB client over WebSocket binary messages.
struct RfbOverWebSocket {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    buffered: Vec<u8>,
}

/// What ServerInit announced.
struct ServerInit {
    width: u16,
    height: u16,
    bits_per_pixel: u8,
    name: String,
}

impl RfbOverWebSocket {
    async fn connect(url: &str) -> Self {
        let (socket, _) = tokio::time::timeout(STEP_LIMIT, tokio_tungstenite::connect_async(url))
            .await
            .unwrap()
            .unwrap();
        Self {
            socket,
            buffered: Vec::new(),
        }
    }

    async fn read_exact(&mut self, count: usize) -> Vec<u8> {
        while self.buffered.len() < count {
            let message = tokio::time::timeout(STEP_LIMIT, self.socket.next())
                .await
                .unwrap()
                .expect("the console closed")
                .unwrap();
            match message {
                Message::Binary(bytes) => self.buffered.extend_from_slice(&bytes),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected message {other:?}"),
            }
        }
        self.buffered.drain(..count).collect()
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.socket
            .send(Message::Binary(Bytes::copy_from_slice(bytes)))
            .await
            .unwrap();
    }

    async fn read_u16(&mut self) -> u16 {
        let bytes = self.read_exact(2).await;
        u16::from_be_bytes([bytes[0], bytes[1]])
    }

    async fn read_u32(&mut self) -> u32 {
        let bytes = self.read_exact(4).await;
        u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }

    /// RFB 3.8 with security type None up to ServerInit.
    async fn handshake(&mut self) -> ServerInit {
        assert_eq!(self.read_exact(12).await, b"RFB 003.008\n");
        self.send(b"RFB 003.008\n").await;
        let type_count = self.read_exact(1).await[0];
        let types = self.read_exact(usize::from(type_count)).await;
        assert!(types.contains(&1), "security type None offered: {types:?}");
        self.send(&[1]).await;
        assert_eq!(self.read_u32().await, 0, "SecurityResult OK");
        self.send(&[1]).await; // ClientInit, shared
        let width = self.read_u16().await;
        let height = self.read_u16().await;
        let pixel_format = self.read_exact(16).await;
        let name_length = self.read_u32().await;
        let name = self.read_exact(name_length as usize).await;
        ServerInit {
            width,
            height,
            bits_per_pixel: pixel_format[0],
            name: String::from_utf8(name).unwrap(),
        }
    }

    /// Asks for a region (non-incremental) and returns the first rectangle's Raw pixels.
    async fn framebuffer(&mut self, width: u16, height: u16, bytes_per_pixel: usize) -> Vec<u8> {
        let mut request = vec![3, 0, 0, 0, 0, 0];
        request.extend_from_slice(&width.to_be_bytes());
        request.extend_from_slice(&height.to_be_bytes());
        self.send(&request).await;
        let header = self.read_exact(4).await;
        assert_eq!(header[0], 0, "FramebufferUpdate");
        assert!(u16::from_be_bytes([header[2], header[3]]) >= 1);
        let rectangle = self.read_exact(12).await;
        let rect_width = u16::from_be_bytes([rectangle[4], rectangle[5]]);
        let rect_height = u16::from_be_bytes([rectangle[6], rectangle[7]]);
        assert_eq!(&rectangle[8..12], &[0, 0, 0, 0], "Raw encoding");
        self.read_exact(usize::from(rect_width) * usize::from(rect_height) * bytes_per_pixel)
            .await
    }
}

/// A GET over a fresh connection; returns the status line, the head and the body.
async fn http_get(address: &str, path: &str) -> (String, String, Vec<u8>) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(STEP_LIMIT, stream.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap();
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a complete response head");
    let head = String::from_utf8(response[..split].to_vec()).unwrap();
    let status = head.lines().next().unwrap().to_owned();
    (status, head, response[split + 4..].to_vec())
}

fn fake_novnc_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("core")).unwrap();
    std::fs::write(dir.path().join("core/rfb.js"), FAKE_RFB_JS).unwrap();
    dir
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[tokio::test]
async fn printed_console_url_opens_the_simulated_vm_and_the_page_is_served() {
    let novnc = fake_novnc_dir();
    let mut demo = DemoProcess::start(&["--novnc-dir", path_str(novnc.path())]);
    let console_url = demo.url("ws://", "ubuntu");
    let page_url = demo.url("http://", "ubuntu");
    assert!(console_url.ends_with("/ubuntu"), "{console_url}");

    let mut console = RfbOverWebSocket::connect(&console_url).await;
    let init = console.handshake().await;
    assert_eq!(init.name, "ws-proxy test VM (ubuntu)");
    assert_eq!((init.width, init.height), (800, 600));
    let bytes_per_pixel = usize::from(init.bits_per_pixel / 8);
    let pixels = console.framebuffer(init.width, 8, bytes_per_pixel).await;
    assert_eq!(pixels.len(), usize::from(init.width) * 8 * bytes_per_pixel);
    assert_eq!(
        &pixels[..3],
        &[0xff, 0xff, 0xff],
        "the first colour bar is white"
    );

    // The token names ubuntu and kali only.
    let other_vm = console_url.replace("/ubuntu", "/windows");
    let refused = tokio_tungstenite::connect_async(other_vm.as_str()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
        }
        other => panic!("a VM outside the token must be refused, got {other:?}"),
    }

    let page = page_url.strip_prefix("http://").unwrap();
    let (page_address, page_link) = page.split_at(page.find('/').unwrap());
    // The page link names the VM only; the token rides in the fragment (never sent to the page
    // server), from where the page puts it in the bearer subprotocol.
    let (page_path, token) = page_link.split_once("#token=").unwrap();
    let path_token = console_url.rsplit('/').nth(1).unwrap();
    assert_eq!(token, path_token);
    assert_eq!(
        page_path.split_once("?url=").unwrap().1,
        console_url.replace(&format!("/{token}/"), "/"),
        "the page link carries the console URL without the token"
    );
    let (status, head, body) = http_get(page_address, page_path).await;
    assert!(status.contains("200"), "{status}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html")
    );
    let html = String::from_utf8(body).unwrap();
    assert!(html.contains("./novnc/core/rfb.js"), "{html}");

    let (status, head, body) = http_get(page_address, "/novnc/core/rfb.js").await;
    assert!(status.contains("200"), "{status}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/javascript")
    );
    assert_eq!(body, FAKE_RFB_JS.as_bytes());
    for outside in [
        "/novnc/../core/rfb.js",
        "/novnc/core/missing.js",
        "/etc/passwd",
    ] {
        let (status, _, _) = http_get(page_address, outside).await;
        assert!(status.contains("404"), "{outside}: {status}");
    }

    // Ctrl-C with a console open: the console is closed with 1001 and the demo exits 0.
    demo.send_sigterm();
    let close_code = loop {
        let message = tokio::time::timeout(STEP_LIMIT, console.socket.next())
            .await
            .unwrap();
        match message {
            Some(Ok(Message::Close(frame))) => break frame.map(|frame| u16::from(frame.code)),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close_code, Some(1001));
    drop(console);
    let status = tokio::task::spawn_blocking(move || demo.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn a_given_secret_and_prefix_accept_tokens_minted_elsewhere() {
    let secret = "demo-test-secret-4f1e";
    let novnc = fake_novnc_dir();
    let mut demo = DemoProcess::start(&[
        "--secret",
        secret,
        "--prefix",
        "lab/ws",
        "--vm",
        "kali",
        "--namespace",
        "class-7",
        "--novnc-dir",
        path_str(novnc.path()),
    ]);
    let printed = demo.url("ws://", "kali");
    let address = printed
        .strip_prefix("ws://")
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        printed.starts_with(&format!("ws://{address}/lab/ws/")),
        "{printed}"
    );

    let token = proxy_auth::issue(
        7,
        LabInstance::new(1, 2, "class-7", ["kali"]),
        Expiry::In(Duration::from_secs(60)),
        &SigningKey::hs256(secret).unwrap(),
    )
    .unwrap();
    let mut console =
        RfbOverWebSocket::connect(&format!("ws://{address}/lab/ws/{token}/kali")).await;
    assert_eq!(console.handshake().await.name, "ws-proxy test VM (kali)");
    console.socket.close(None).await.unwrap();

    demo.send_sigterm();
    let status = tokio::task::spawn_blocking(move || demo.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_novnc_dir_without_rfb_js_is_refused_before_anything_listens() {
    let empty = tempfile::tempdir().unwrap();
    let output = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--novnc-dir"])
        .arg(empty.path())
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("npm ci --prefix e2e"), "{stderr}");
    assert!(output.stdout.is_empty());
}

/// The README's dev-mode recipe: a proxy already running in dev mode (here in process, in front
/// of the simulated API in `kubectl proxy`'s place) and the demo serving only its page, with
/// links whose tokens the proxy accepts.
#[tokio::test]
async fn page_only_serves_novnc_for_a_running_proxy_with_tokens_it_accepts() {
    use kubevirt_sim::{KubevirtSim, SimConfig, VmBehavior};

    let secret = "dev-secret-for-the-page";
    let sim = KubevirtSim::start(
        SimConfig::new()
            .listen(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
            .vm_in_namespace("default", "ubuntu", VmBehavior::Rfb),
    )
    .await
    .unwrap();
    let proxy = proxy_server::WebsocketProxy::builder()
        .secret_key(secret)
        .local_dev_mode(true)
        .remote_url(format!("ws://{}", sim.local_addr()))
        .build()
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(async move {
        proxy
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await;
    });

    let novnc = fake_novnc_dir();
    let proxy_url = format!("ws://{proxy_address}");
    let mut page = DemoProcess::start(&[
        "--page-only",
        "--proxy-url",
        &proxy_url,
        "--secret",
        secret,
        "--namespace",
        "default",
        "--vm",
        "ubuntu",
        "--novnc-dir",
        path_str(novnc.path()),
    ]);
    let link = page.url("http://", "ubuntu");
    let (page_link, token) = link.split_once("#token=").unwrap();
    let page_url = page_link.strip_prefix("http://").unwrap();
    let (page_address, page_path) = page_url.split_at(page_url.find('/').unwrap());
    assert_eq!(
        page_path.split_once("?url=").unwrap().1,
        format!("{proxy_url}/ubuntu"),
        "the page opens the running proxy's console URL without the token"
    );
    let (status, _, body) = http_get(page_address, page_path).await;
    assert!(status.contains("200"), "{status}");
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("./novnc/core/rfb.js")
    );

    let mut console = RfbOverWebSocket::connect(&format!("{proxy_url}/{token}/ubuntu")).await;
    assert_eq!(console.handshake().await.name, "ws-proxy test VM (ubuntu)");
    console.socket.close(None).await.unwrap();

    page.send_sigterm();
    let status = tokio::task::spawn_blocking(move || page.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let _ = stop.send(());
    serving.await.unwrap();
    sim.shutdown().await;
}

#[test]
fn page_only_needs_the_proxy_url_and_the_secret() {
    let output = Command::new(BINARY)
        .args(["--page-only", "--secret", "s"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--proxy-url"), "{stderr}");
}
