//! A tiny HTTPS server for one document whose body and status a test changes while it runs
//! (a JWK Set URL, say). It runs on a thread of its own, so a test may block while the code under
//! test fetches from it.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::TestPki;

struct Document {
    status: u16,
    body: String,
}

/// Serves the current document at every path, over HTTPS with a [`TestPki`] certificate
/// for `127.0.0.1`, one request per connection; stops when dropped.
pub struct HttpsFileServer {
    addr: SocketAddr,
    document: Arc<Mutex<Document>>,
    requests: Arc<AtomicUsize>,
    _stop: oneshot::Sender<()>,
}

impl HttpsFileServer {
    /// Starts serving `body` with status 200, with the server certificate of `pki`.
    pub fn start(pki: &TestPki, body: &str) -> Self {
        let document = Arc::new(Mutex::new(Document {
            status: 200,
            body: body.to_owned(),
        }));
        let requests = Arc::new(AtomicUsize::new(0));
        let acceptor = pki.acceptor();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (served_document, served_requests) = (Arc::clone(&document), Arc::clone(&requests));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                let accept_loop = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let acceptor = acceptor.clone();
                        let document = Arc::clone(&served_document);
                        let requests = Arc::clone(&served_requests);
                        tokio::spawn(async move {
                            let Ok(mut tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let mut head = Vec::new();
                            let mut chunk = [0; 1024];
                            while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                                match tls.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(read) => head.extend_from_slice(&chunk[..read]),
                                }
                                if head.len() > 16 * 1024 {
                                    return;
                                }
                            }
                            requests.fetch_add(1, Ordering::SeqCst);
                            let response = {
                                let document = document.lock().unwrap();
                                format!(
                                    "HTTP/1.1 {} X\r\ncontent-type: application/json\r\n\
                                     content-length: {}\r\nconnection: close\r\n\r\n{}",
                                    document.status,
                                    document.body.len(),
                                    document.body
                                )
                            };
                            let _ = tls.write_all(response.as_bytes()).await;
                            let _ = tls.shutdown().await;
                        });
                    }
                };
                tokio::select! {
                    () = accept_loop => {}
                    _ = stopped => {}
                }
            });
        });
        Self {
            addr,
            document,
            requests,
            _stop: stop,
        }
    }

    /// `https://127.0.0.1:{port}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.addr.port())
    }

    /// Serves `body` with status 200 from now on.
    pub fn set_body(&self, body: &str) {
        self.set(200, body);
    }

    /// Serves `body` with `status` from now on.
    pub fn set(&self, status: u16, body: &str) {
        let mut document = self.document.lock().unwrap();
        document.status = status;
        document.body = body.to_owned();
    }

    /// How many requests were answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}
