//! Hubs through their seam: a dial future and the frame transport it yields (an in-memory
//! pair standing in for the VM's console). One dial per VM whatever the number of viewers, a
//! full hub refuses without dialling, a failed dial leaves no hub behind, and a hub whose last
//! viewer left closes its upstream after the linger.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use proxy_core::{Frame, MemoryTransport, close_code};
use proxy_share::{HubKey, Hubs, JoinError, Participant, ShareConfig};
use proxy_upstream::Upstream;
use tokio::time::timeout;

/// Generous bound for what must happen soon; never a measured threshold.
const BOUND: Duration = Duration::from_secs(10);

fn vm(name: &str) -> HubKey {
    ("lab-ns".to_owned(), name.to_owned())
}

fn viewer(session: &str, controls: bool) -> Participant {
    Participant {
        session: session.to_owned(),
        user_id: format!("user-of-{session}"),
        controls,
    }
}

/// Dials count themselves; each successful dial hands its VM end to `vm_ends`.
#[derive(Default)]
struct Dialler {
    dials: AtomicUsize,
    vm_ends: std::sync::Mutex<Vec<MemoryTransport>>,
}

impl Dialler {
    async fn dial(&self) -> Result<Upstream<MemoryTransport>, std::io::Error> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        let (upstream, vm_end) = MemoryTransport::pair(64);
        self.vm_ends.lock().unwrap().push(vm_end);
        Ok(Upstream {
            transport: upstream,
            subprotocol: Some("plain.kubevirt.io".to_owned()),
            tls_handshake: None,
        })
    }

    async fn refuse(&self) -> Result<Upstream<MemoryTransport>, std::io::Error> {
        self.dials.fetch_add(1, Ordering::SeqCst);
        Err(std::io::Error::other("vm not running"))
    }

    fn dials(&self) -> usize {
        self.dials.load(Ordering::SeqCst)
    }
}

fn hubs(max_viewers: usize, linger: Duration) -> Arc<Hubs> {
    Arc::new(Hubs::new(ShareConfig {
        max_viewers,
        linger,
        upstream_keepalive: None,
        ..ShareConfig::default()
    }))
}

#[tokio::test]
async fn viewers_of_one_vm_share_one_dial_and_a_full_hub_refuses_without_dialling() {
    let hubs = hubs(2, Duration::from_secs(30));
    let dialler = Dialler::default();

    let (_student, subprotocol) = hubs
        .join(vm("ubuntu"), viewer("a.1", true), dialler.dial())
        .await
        .unwrap();
    assert_eq!(subprotocol.as_deref(), Some("plain.kubevirt.io"));
    let (_teacher, subprotocol) = hubs
        .join(vm("ubuntu"), viewer("a.2", false), dialler.dial())
        .await
        .unwrap();
    assert_eq!(subprotocol.as_deref(), Some("plain.kubevirt.io"));
    assert_eq!(dialler.dials(), 1, "the second viewer joined the hub");

    let third = hubs
        .join(vm("ubuntu"), viewer("a.3", false), dialler.dial())
        .await;
    assert!(matches!(third, Err(JoinError::Full)));
    assert_eq!(dialler.dials(), 1, "a full hub does not dial");

    let participants = hubs.participants();
    assert_eq!(participants.len(), 1);
    let (key, mut viewers) = participants.into_iter().next().unwrap();
    assert_eq!(key, vm("ubuntu"));
    viewers.sort_by(|a, b| a.session.cmp(&b.session));
    assert_eq!(viewers, [viewer("a.1", true), viewer("a.2", false)]);

    // Another VM has its own hub and its own dial.
    let (_other, _) = hubs
        .join(vm("kali"), viewer("a.4", true), dialler.dial())
        .await
        .unwrap();
    assert_eq!(dialler.dials(), 2);
    assert_eq!(hubs.participants().len(), 2);
}

#[tokio::test]
async fn a_failed_dial_leaves_no_hub_and_the_next_viewer_dials_again() {
    let hubs = hubs(10, Duration::from_secs(30));
    let dialler = Dialler::default();
    let refused = hubs
        .join(vm("ubuntu"), viewer("a.1", true), dialler.refuse())
        .await;
    match refused {
        Err(JoinError::Dial(error)) => assert_eq!(error.to_string(), "vm not running"),
        Err(JoinError::Full) => panic!("not full"),
        Ok(_) => panic!("joined a hub whose dial failed"),
    }
    assert!(hubs.participants().is_empty());
    let joined = hubs
        .join(vm("ubuntu"), viewer("a.2", true), dialler.dial())
        .await;
    assert!(joined.is_ok());
    assert_eq!(dialler.dials(), 2);
}

#[tokio::test]
async fn a_quiet_hub_closes_its_upstream_after_the_last_viewer_leaves() {
    let hubs = hubs(10, Duration::from_millis(100));
    let dialler = Dialler::default();
    let (student, _) = hubs
        .join(vm("ubuntu"), viewer("a.1", true), dialler.dial())
        .await
        .unwrap();
    let mut vm_end = dialler.vm_ends.lock().unwrap().pop().unwrap();
    drop(student);
    let close = timeout(BOUND, async {
        while let Some(frame) = vm_end.next().await {
            if let Ok(Frame::Close(close)) = frame {
                return close;
            }
        }
        None
    })
    .await
    .expect("the hub kept its upstream after the linger");
    let close = close.expect("a close frame with a code");
    assert_eq!(close.code, close_code::NORMAL);
    assert_eq!(close.reason, "no viewers left");
    timeout(BOUND, async {
        while !hubs.participants().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the closed hub is forgotten");
}

/// Plays a VM that draws all the time: after its handshake it sends a small update every
/// 10 ms whether asked or not (a blinking cursor, a clock, a scrolling log), and the whole
/// screen when asked for a full update. Returns how
/// many update requests it received and the close frame that ended its console.
async fn keep_drawing(
    mut vm_end: MemoryTransport,
    requests: Arc<AtomicUsize>,
) -> Option<proxy_core::CloseFrame> {
    use futures_util::SinkExt as _;
    vm_end
        .send(Frame::Binary(b"RFB 003.008\n"[..].into()))
        .await
        .unwrap();
    vm_end.send(Frame::Binary(vec![1, 1].into())).await.unwrap();
    let mut received = Vec::new();
    let mut handshake = 0;
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let mut drawing = false;
    let mut frame_number: u16 = 0;
    loop {
        tokio::select! {
            frame = vm_end.next() => match frame {
                Some(Ok(Frame::Binary(bytes))) => received.extend_from_slice(&bytes),
                Some(Ok(Frame::Close(close))) => return close,
                Some(Ok(_)) => continue,
                _ => return None,
            },
            _ = ticker.tick(), if drawing => {
                // A 2x2 corner that never changes (the 0x55 the test looks for), and a 16x16
                // patch of text-like pixels (two or three colours) moving over the screen.
                frame_number = frame_number.wrapping_add(1);
                let mut update = vec![0, 0, 0, 2, 0, 0, 0, 0, 0, 2, 0, 2, 0, 0, 0, 0];
                update.extend_from_slice(&[0x55; 16]);
                let (x, y) = ((frame_number * 7) % 48, (frame_number * 5) % 32);
                for value in [x, y, 16, 16] {
                    update.extend_from_slice(&value.to_be_bytes());
                }
                update.extend_from_slice(&[0, 0, 0, 0]);
                for pixel in 0..256u16 {
                    let lit = (pixel.wrapping_mul(frame_number | 1) >> 3) % 3;
                    let colour: [u8; 4] = match lit {
                        0 => [0x10, 0x10, 0x10, 0],
                        1 => [0xa8, 0xa8, 0xa8, 0],
                        _ => [0x00, 0xff, 0x00, 0],
                    };
                    update.extend_from_slice(&colour);
                }
                if vm_end.send(Frame::Binary(update.into())).await.is_err() {
                    return None;
                }
                continue;
            }
        }
        // Version (12), security choice (1), ClientInit (1), then messages.
        loop {
            match handshake {
                0 if received.len() >= 12 => {
                    received.drain(..12);
                    handshake = 1;
                }
                1 if !received.is_empty() => {
                    received.drain(..1);
                    vm_end
                        .send(Frame::Binary(vec![0, 0, 0, 0].into()))
                        .await
                        .unwrap();
                    handshake = 2;
                }
                2 if !received.is_empty() => {
                    received.drain(..1);
                    let mut init = vec![0, 64, 0, 48];
                    init.extend_from_slice(&[32, 24, 0, 1, 0, 255, 0, 255, 0, 255, 16, 8, 0]);
                    init.extend_from_slice(&[0, 0, 0, 0, 0, 0, 2]);
                    init.extend_from_slice(b"vm");
                    vm_end.send(Frame::Binary(init.into())).await.unwrap();
                    handshake = 3;
                    drawing = true;
                }
                3 if !received.is_empty() => {
                    let length = match received[0] {
                        0 => 20,
                        2 if received.len() >= 4 => {
                            4 + 4 * usize::from(u16::from_be_bytes([received[2], received[3]]))
                        }
                        3 => 10,
                        4 => 8,
                        5 => 6,
                        _ => break,
                    };
                    if received.len() < length {
                        break;
                    }
                    if received[0] == 3 {
                        requests.fetch_add(1, Ordering::SeqCst);
                        if received[1] == 0 {
                            // A full update request is answered with the whole screen.
                            let mut whole = vec![0, 0, 0, 1, 0, 0, 0, 0, 0, 64, 0, 48, 0, 0, 0, 0];
                            whole.extend((0..64 * 48u32).flat_map(|pixel| {
                                (pixel.wrapping_mul(2_654_435_761) & 0x00ff_ffff).to_le_bytes()
                            }));
                            if vm_end.send(Frame::Binary(whole.into())).await.is_err() {
                                return None;
                            }
                        }
                    }
                    received.drain(..length);
                }
                _ => break,
            }
        }
    }
}

#[tokio::test]
async fn a_hub_whose_vm_keeps_drawing_asks_nothing_without_viewers_and_lets_go_after_the_linger() {
    let hubs = hubs(10, Duration::from_millis(300));
    let dialler = Dialler::default();
    let (mut student, _) = hubs
        .join(vm("ubuntu"), viewer("a.1", true), dialler.dial())
        .await
        .unwrap();
    let vm_end = dialler.vm_ends.lock().unwrap().pop().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let console = tokio::spawn(keep_drawing(vm_end, Arc::clone(&requests)));

    // The student's client: handshake, its encodings (Raw), a request; it sees the VM drawing.
    let mut set_up = vec![2, 0, 0, 1, 0, 0, 0, 0];
    set_up.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 64, 0, 48]);
    let mut from_hub = connect_viewer(&mut student, set_up).await;
    timeout(BOUND, async {
        // ProtocolVersion, security, result, ServerInit and then several updates.
        while from_hub.iter().filter(|&&byte| byte == 0x55).count() < 16 * 5 {
            match student.next().await {
                Some(Ok(Frame::Binary(bytes))) => from_hub.extend_from_slice(&bytes),
                Some(Ok(_)) => {}
                other => panic!("the hub's side ended: {other:?}"),
            }
        }
    })
    .await
    .expect("the viewer saw the VM draw");
    assert!(
        requests.load(Ordering::SeqCst) >= 1,
        "the hub asked for updates while watched"
    );

    drop(student);
    let asked_when_left = requests.load(Ordering::SeqCst);
    let close = timeout(BOUND, console)
        .await
        .expect("the hub kept the upstream of a VM that keeps drawing")
        .unwrap()
        .expect("a close frame");
    assert_eq!(close.code, close_code::NORMAL);
    assert_eq!(close.reason, "no viewers left");
    assert!(
        requests.load(Ordering::SeqCst) <= asked_when_left + 1,
        "without viewers the hub asks the VM for nothing (one request may have been in flight)"
    );
}

/// A viewer's client on a [`HubTransport`]: the handshake, then `set_up` (its format,
/// encodings and first request); returns what the hub sent after the handshake.
async fn connect_viewer(viewer: &mut proxy_share::HubTransport, set_up: Vec<u8>) -> Vec<u8> {
    use futures_util::SinkExt as _;
    let mut from_hub = Vec::new();
    for (wait_for, message) in [(12, &b"RFB 003.008\n"[..]), (14, &[1]), (18, &[1])] {
        timeout(BOUND, async {
            while from_hub.len() < wait_for {
                match viewer.next().await {
                    Some(Ok(Frame::Binary(bytes))) => from_hub.extend_from_slice(&bytes),
                    Some(Ok(_)) => {}
                    other => panic!("the hub's side ended: {other:?}"),
                }
            }
        })
        .await
        .expect("the hub's handshake");
        viewer.send(Frame::Binary(message.into())).await.unwrap();
    }
    viewer.send(Frame::Binary(set_up.into())).await.unwrap();
    from_hub
}

/// SetEncodings (Tight, compression 2, Raw, DesktopSize) and a full update request, as
/// noVNC sends them.
fn tight_viewer_set_up() -> Vec<u8> {
    let mut set_up = vec![2, 0, 0, 4];
    for encoding in [7i32, -256 + 2, 0, -223] {
        set_up.extend_from_slice(&encoding.to_be_bytes());
    }
    set_up.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 64, 0, 48]);
    set_up
}

#[tokio::test]
async fn viewers_take_the_vms_stream_or_a_shared_one_while_the_vm_keeps_drawing() {
    use futures_util::SinkExt as _;
    let hubs = hubs(10, Duration::from_millis(300));
    let dialler = Dialler::default();
    let (mut student, _) = hubs
        .join(vm("ubuntu"), viewer("a.1", true), dialler.dial())
        .await
        .unwrap();
    let vm_end = dialler.vm_ends.lock().unwrap().pop().unwrap();
    let console = tokio::spawn(keep_drawing(vm_end, Arc::new(AtomicUsize::new(0))));
    connect_viewer(&mut student, tight_viewer_set_up()).await;
    let (mut teacher, _) = hubs
        .join(vm("ubuntu"), viewer("a.2", false), dialler.dial())
        .await
        .unwrap();
    connect_viewer(&mut teacher, tight_viewer_set_up()).await;
    // Both read (the teacher's client asks again after each update, as noVNC does).
    const REQUEST: [u8; 10] = [3, 1, 0, 0, 0, 0, 0, 64, 0, 48];
    let modes = timeout(BOUND, async {
        loop {
            tokio::select! {
                Some(Ok(_)) = student.next() => {}
                Some(Ok(_)) = teacher.next() => {
                    teacher.send(Frame::Binary(REQUEST[..].into())).await.unwrap();
                }
            }
            let consoles = hubs.consoles();
            let mut modes: Vec<(String, &str)> = consoles[0]
                .viewers
                .iter()
                .map(|viewer| (viewer.participant.session.clone(), viewer.updates))
                .collect();
            modes.sort();
            if modes.len() == 2 && modes[1].1 == "shared" {
                break modes;
            }
        }
    })
    .await
    .expect("the late joiner takes a shared stream");
    // The student was there when the hub asked the VM for its encodings: it gets the VM's
    // own messages.
    assert_eq!(modes[0], ("a.1".to_owned(), "vm"));
    drop((student, teacher));
    timeout(BOUND, console).await.unwrap().unwrap();
}

/// A client-side RFB decoder (the crate's own client, speaking Tight as noVNC does) reading a
/// viewer's side of the hub and asking again after each update, `slow` ones only now and then.
async fn decode_viewer(mut viewer: proxy_share::HubTransport, updates: usize, slow: bool) {
    use futures_util::SinkExt as _;
    use proxy_rfb::upstream::{UpstreamClient, UpstreamEvent};
    let mut client = UpstreamClient::new();
    let encodings = [7, -256 + 2, -32 + 6, 0, -223, -239, -307, -224];
    let mut seen = 0;
    while seen < updates {
        let Some(Ok(frame)) = viewer.next().await else {
            panic!("the viewer's side ended");
        };
        let Frame::Binary(bytes) = frame else {
            continue;
        };
        for event in client
            .feed(&bytes)
            .expect("every byte the hub sends decodes")
        {
            match event {
                UpstreamEvent::Ready { .. } => {
                    client.configure(proxy_rfb::PixelFormat::rgb888(), &encodings);
                    client.request_update(false);
                }
                UpstreamEvent::Updated(_) => {
                    seen += 1;
                    client.request_update(true);
                    if slow && seen % 10 == 0 {
                        // Falls behind the shared stream now and then.
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
                _ => {}
            }
        }
        let output = client.take_output();
        if !output.is_empty() {
            viewer.send(Frame::Binary(output.into())).await.unwrap();
        }
    }
}

#[tokio::test]
async fn tight_viewers_joining_falling_behind_and_rejoining_shared_streams_always_decode() {
    let hubs = hubs(10, Duration::from_millis(300));
    let dialler = Dialler::default();
    let (student, _) = hubs
        .join(vm("ubuntu"), viewer("a.1", true), dialler.dial())
        .await
        .unwrap();
    let vm_end = dialler.vm_ends.lock().unwrap().pop().unwrap();
    let console = tokio::spawn(keep_drawing(vm_end, Arc::new(AtomicUsize::new(0))));
    let student = tokio::spawn(decode_viewer(student, 150, false));
    let mut others = Vec::new();
    for (session, slow) in [("a.2", false), ("a.3", true), ("a.4", false)] {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let (joined, _) = hubs
            .join(vm("ubuntu"), viewer(session, false), dialler.dial())
            .await
            .unwrap();
        others.push(tokio::spawn(decode_viewer(joined, 60, slow)));
    }
    timeout(Duration::from_secs(60), async {
        student.await.unwrap();
        for other in others {
            other.await.unwrap();
        }
    })
    .await
    .expect("every viewer decoded its updates");
    console.abort();
}
