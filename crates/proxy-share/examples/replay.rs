//! What a shared console costs per viewer, on recorded console traffic: a recorded VM stream
//! (noVNC's player format, e.g. `e2e/record-traffic.mjs`'s `scrolling.js`) replayed in real
//! time into one hub, watched by V viewers that ask for what the recorded client asked for
//! (so the first takes the VM's own messages and the others share one encoded stream), or by
//! viewers with distinct settings (one stream each). Prints this process's CPU time per run
//! and per viewer, and viewers per core.
//!
//!     cargo run --release -p proxy-share --example replay -- RECORDING.js [VIEWERS...]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use proxy_core::{Frame, MemoryTransport};
use proxy_share::{HubTransport, Hubs, Participant, ShareConfig};
use proxy_upstream::Upstream;
use test_support::playback::Entry;

/// This process's CPU seconds so far (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
}

/// Server messages of the recorded handshake (version, security types, result, ServerInit).
const HANDSHAKE_ENTRIES: usize = 4;

/// Plays the recorded VM: its handshake at once, then (once `start` says every viewer is
/// there) its updates at their recorded times, whatever the hub asks (what the hub sends is
/// read and dropped). The first update is the whole screen the recorded client asked for.
async fn play_vm(vm: MemoryTransport, entries: Arc<Vec<Entry>>, start: Arc<tokio::sync::Notify>) {
    let (mut vm, mut from_hub) = vm.split();
    tokio::spawn(async move { while from_hub.next().await.is_some() {} });
    let server: Vec<&Entry> = entries.iter().filter(|entry| !entry.from_client).collect();
    for entry in &server[..HANDSHAKE_ENTRIES.min(server.len())] {
        if vm
            .send(Frame::Binary(entry.bytes.clone().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    start.notified().await;
    let begun = Instant::now();
    let first = server
        .get(HANDSHAKE_ENTRIES)
        .map_or(0, |entry| entry.offset_ms);
    for entry in server.iter().skip(HANDSHAKE_ENTRIES) {
        let due = begun + Duration::from_millis(entry.offset_ms - first);
        tokio::time::sleep_until(due.into()).await;
        if vm
            .send(Frame::Binary(entry.bytes.clone().into()))
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = vm.send(Frame::Close(None)).await;
}

/// A viewer that asks for `set_up` (format, encodings, a request) and asks again after each
/// update, as noVNC does; counts the bytes it gets.
async fn watch(mut viewer: HubTransport, set_up: Vec<u8>, received: Arc<AtomicU64>) {
    let mut from_hub = 0usize;
    let mut answered = 0;
    let request = [3u8, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff];
    while let Some(Ok(frame)) = viewer.next().await {
        let Frame::Binary(bytes) = frame else {
            continue;
        };
        from_hub += bytes.len();
        received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        // Version (12), security types (2), result (4): the client's answers, then ServerInit.
        let reply: Vec<u8> = match answered {
            0 if from_hub >= 12 => b"RFB 003.008\n".to_vec(),
            1 if from_hub >= 14 => vec![1],
            2 if from_hub >= 18 => vec![1],
            3 if from_hub > 18 + 24 => set_up.clone(),
            4.. => request.to_vec(),
            _ => continue,
        };
        answered += 1;
        if viewer.send(Frame::Binary(reply.into())).await.is_err() {
            return;
        }
    }
}

fn set_up(format: Option<[u8; 16]>, encodings: &[i32]) -> Vec<u8> {
    let mut message = Vec::new();
    if let Some(format) = format {
        message.extend_from_slice(&[0, 0, 0, 0]);
        message.extend_from_slice(&format);
    }
    message.extend_from_slice(&[2, 0]);
    message.extend_from_slice(&(encodings.len() as u16).to_be_bytes());
    for encoding in encodings {
        message.extend_from_slice(&encoding.to_be_bytes());
    }
    message.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    message
}

/// One run: a hub, its VM replaying `entries`, and a viewer per set-up; (CPU s, bytes to all).
async fn run(entries: Arc<Vec<Entry>>, set_ups: Vec<Vec<u8>>) -> (f64, u64) {
    let hubs = Arc::new(Hubs::new(ShareConfig {
        max_viewers: set_ups.len(),
        linger: Duration::from_millis(10),
        upstream_keepalive: None,
        ..ShareConfig::default()
    }));
    let received = Arc::new(AtomicU64::new(0));
    let start = Arc::new(tokio::sync::Notify::new());
    let cpu = cpu_seconds();
    let mut viewers = Vec::new();
    let key = ("lab".to_owned(), "vm".to_owned());
    for (index, set_up) in set_ups.into_iter().enumerate() {
        let participant = Participant {
            session: format!("viewer-{index}"),
            user_id: format!("user-{index}"),
            controls: index == 0,
        };
        let entries = Arc::clone(&entries);
        let vm_start = Arc::clone(&start);
        let dial = async move {
            let (upstream, vm) = MemoryTransport::pair(64);
            tokio::spawn(play_vm(vm, entries, vm_start));
            Ok::<_, std::io::Error>(Upstream {
                transport: upstream,
                subprotocol: None,
                tls_handshake: None,
            })
        };
        let (viewer, _) = hubs
            .join(key.clone(), participant, dial)
            .await
            .ok()
            .unwrap();
        viewers.push(tokio::spawn(watch(viewer, set_up, Arc::clone(&received))));
        if index == 0 {
            // The first viewer's settings decide what the hub asks the VM for.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Every viewer past its handshake, then the VM's updates.
    tokio::time::sleep(Duration::from_millis(500)).await;
    start.notify_one();
    for viewer in viewers {
        let _ = viewer.await;
    }
    (cpu_seconds() - cpu, received.load(Ordering::Relaxed))
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: replay RECORDING.js [VIEWERS...]");
    let counts: Vec<usize> = args.map(|count| count.parse().unwrap()).collect();
    let counts = if counts.is_empty() {
        vec![1, 2, 10, 100, 1000]
    } else {
        counts
    };
    let text = std::fs::read_to_string(&path).unwrap();
    let entries = Arc::new(test_support::playback::entries(&text));
    let seconds = entries.last().map_or(1, |entry| entry.offset_ms) as f64 / 1000.0;
    let client: Vec<u8> = entries
        .iter()
        .filter(|entry| entry.from_client)
        .flat_map(|entry| entry.bytes.clone())
        .collect();
    let (format, encodings) = test_support::playback::rfb_client_settings(&client);
    let same = set_up(format, &encodings);
    println!("{path}: {seconds:.1} s of recorded traffic per run");
    println!(
        "| viewers | settings | proxy CPU s | bytes to all viewers | CPU per further viewer, % of a core | further viewers per core |"
    );
    println!("|---|---|---|---|---|---|");
    let (alone, _) = run(Arc::clone(&entries), vec![same.clone()]).await;
    println!("| 1 | the recorded client's | {alone:.2} | - | - | - |");
    for &count in counts.iter().filter(|&&count| count > 1) {
        let (cpu, bytes) = run(Arc::clone(&entries), vec![same.clone(); count]).await;
        let per_viewer = (cpu - alone).max(0.0) / (count - 1) as f64 / seconds;
        println!(
            "| {count} | all the same | {cpu:.2} | {bytes} | {:.3} | {} |",
            per_viewer * 100.0,
            if per_viewer > 0.0 {
                format!("{:.0}", 1.0 / per_viewer)
            } else {
                "-".to_owned()
            }
        );
    }
    // Ten viewers, each with another compression level: ten streams, ten encodes.
    let distinct: Vec<Vec<u8>> = std::iter::once(same.clone())
        .chain((0..9).map(|level| {
            let mut encodings = encodings.clone();
            encodings.retain(|&encoding| !(-256..=-247).contains(&encoding));
            encodings.push(-256 + level);
            set_up(format, &encodings)
        }))
        .collect();
    let (cpu, bytes) = run(Arc::clone(&entries), distinct).await;
    let per_viewer = (cpu - alone).max(0.0) / 9.0 / seconds;
    println!(
        "| 10 | distinct compression levels | {cpu:.2} | {bytes} | {:.3} | {:.0} |",
        per_viewer * 100.0,
        1.0 / per_viewer.max(1e-9)
    );
}
