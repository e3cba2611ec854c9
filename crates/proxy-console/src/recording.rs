//! Session recordings in the websockify/noVNC playback format, written beside the relay.
//!
//! A recording is a JavaScript file that noVNC's playback tooling (and the project's player
//! page) loads:
//!
//! ```text
//! var VNC_frame_data = [
//! '{0{RFB 003.008\n',
//! '{12{\x01\x01',
//! ...
//! 'EOF'];
//! ```
//!
//! Each server message is `'{` + milliseconds since the session started + `{` + its bytes as
//! latin1 text escaped the way Python's `unicode_escape` does (websockify's recorder), with `'`
//! escaped; client messages, when recorded, start with `}` instead. The relay hands messages
//! to a bounded queue and never waits for the disk: when the queue is full, the size cap or
//! the free-space floor is reached or a write fails, the recording is closed as incomplete
//! (renamed `….incomplete.js`, a comment saying why after the array) and, unless strict, the
//! session goes on. Files are flushed and fsynced when the session ends.
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Messages queued for the writer before the recording gives up on a slow disk.
pub const RECORDING_QUEUE_MESSAGES: usize = 4096;

/// Bytes queued for the writer before the recording gives up on a slow disk: what one
/// recording may hold in memory.
pub const RECORDING_QUEUE_BYTES: u64 = 16 * 1024 * 1024;

/// How often (bytes written) the free space of the directory is checked again.
const FREE_SPACE_CHECK_BYTES: u64 = 1024 * 1024;

/// Which sessions are recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum RecordSessions {
    /// Those whose token asks for it (`"console": {"record": true}`).
    Token,
    /// Every session.
    All,
}

/// Where and how sessions are recorded.
#[derive(Debug, Clone)]
pub struct RecordingConfig {
    /// The directory the recordings are written to (it must exist).
    pub directory: PathBuf,
    /// Which sessions are recorded.
    pub sessions: RecordSessions,
    /// The largest recording; a session that reaches it goes on, its recording is closed as
    /// incomplete.
    pub max_bytes: u64,
    /// Recording stops (incomplete) when the directory's filesystem has less free space.
    pub min_free_bytes: u64,
    /// Exams: a session whose recording cannot start is refused, and one whose recording
    /// fails is ended.
    pub strict: bool,
    /// Also record what the client sends (keystrokes: they hold passwords).
    pub client_messages: bool,
}

impl RecordingConfig {
    /// Recordings in `directory` of sessions whose token asks for it, 1 GiB at most each, while
    /// 512 MiB stay free, not strict, server messages only.
    pub fn new(directory: impl Into<PathBuf>) -> Self {
        Self {
            directory: directory.into(),
            sessions: RecordSessions::Token,
            max_bytes: 1 << 30,
            min_free_bytes: 512 << 20,
            strict: false,
            client_messages: false,
        }
    }

    /// Whether a session whose token says `token_asks` is recorded.
    pub fn records(&self, token_asks: bool) -> bool {
        self.sessions == RecordSessions::All || token_asks
    }
}

/// Why a recording could not start or stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    /// The file could not be created.
    #[error("cannot create the recording {}", path.display())]
    Create {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Less free space than the floor.
    #[error("the recordings directory has less than {floor} bytes free")]
    LowSpace {
        /// The configured floor.
        floor: u64,
    },
}

/// What stopped a recording before the session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incomplete {
    /// The recording reached its size cap.
    SizeCap,
    /// The directory's free space fell below the floor.
    LowSpace,
    /// The disk did not keep up: the queue filled.
    SlowDisk,
    /// A write failed.
    WriteFailed,
}

impl Incomplete {
    /// The metric label: `size_cap`, `low_space`, `slow_disk` or `write_failed`.
    pub fn label(self) -> &'static str {
        match self {
            Incomplete::SizeCap => "size_cap",
            Incomplete::LowSpace => "low_space",
            Incomplete::SlowDisk => "slow_disk",
            Incomplete::WriteFailed => "write_failed",
        }
    }
}

/// What the writer reports to the metrics.
pub trait RecordingObserver: Send + Sync {
    /// A recording started.
    fn started(&self);
    /// `bytes` more were written.
    fn wrote(&self, bytes: u64);
    /// The recording closed, complete or not.
    fn ended(&self, incomplete: Option<Incomplete>);
}

enum Entry {
    Server(u64, Bytes),
    Client(u64, Bytes),
}

impl Entry {
    fn len(&self) -> u64 {
        match self {
            Entry::Server(_, bytes) | Entry::Client(_, bytes) => bytes.len() as u64,
        }
    }
}

/// The relay's handle on one session's recording.
pub struct Recorder {
    queue: mpsc::Sender<Entry>,
    started: Instant,
    client_messages: bool,
    /// Set when the recording stopped early: the session then goes on without it (or, strict,
    /// ends).
    stopped: Arc<AtomicBool>,
    queued_bytes: Arc<AtomicU64>,
    /// The recording's file.
    pub path: PathBuf,
}

impl Recorder {
    /// Creates the file for a session and starts its writer. Fails when the directory has too
    /// little space or the file cannot be created.
    pub fn start(
        config: &RecordingConfig,
        session_id: u64,
        namespace: &str,
        vmi_name: &str,
        observer: Arc<dyn RecordingObserver>,
    ) -> Result<Self, RecordingError> {
        if free_bytes(&config.directory).is_some_and(|free| free < config.min_free_bytes) {
            return Err(RecordingError::LowSpace {
                floor: config.min_free_bytes,
            });
        }
        let name = format!(
            "{}-session-{session_id}-{namespace}-{vmi_name}",
            utc_stamp(SystemTime::now())
        );
        let path = config.directory.join(format!("{name}.js"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| RecordingError::Create {
                path: path.clone(),
                source,
            })?;
        let (queue, entries) = mpsc::channel(RECORDING_QUEUE_MESSAGES);
        let stopped = Arc::new(AtomicBool::new(false));
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            file: std::io::BufWriter::new(file),
            path: path.clone(),
            incomplete_path: config.directory.join(format!("{name}.incomplete.js")),
            written: 0,
            max_bytes: config.max_bytes,
            min_free_bytes: config.min_free_bytes,
            directory: config.directory.clone(),
            since_space_check: 0,
            stopped: Arc::clone(&stopped),
            queued_bytes: Arc::clone(&queued_bytes),
            line: Vec::new(),
            observer,
        };
        tokio::task::spawn_blocking(move || writer.run(entries));
        Ok(Self {
            queue,
            started: Instant::now(),
            client_messages: config.client_messages,
            stopped,
            queued_bytes,
            path,
        })
    }

    /// Queues a server message; never waits. Returns false once the recording has stopped.
    pub fn server_message(&self, bytes: &Bytes) -> bool {
        self.queue_entry(Entry::Server(self.offset(), bytes.clone()))
    }

    /// Whether client messages are recorded too.
    pub fn records_client_messages(&self) -> bool {
        self.client_messages
    }

    /// Queues a client message; never waits. Returns false once the recording has stopped.
    pub fn client_message(&self, bytes: &Bytes) -> bool {
        self.queue_entry(Entry::Client(self.offset(), bytes.clone()))
    }

    /// Whether the recording stopped before the session ended.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    fn offset(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn queue_entry(&self, entry: Entry) -> bool {
        if self.stopped() {
            return false;
        }
        let length = entry.len();
        let queued = self.queued_bytes.fetch_add(length, Ordering::Relaxed) + length;
        if queued > RECORDING_QUEUE_BYTES {
            // The writer sees the flag, closes the file as incomplete and stops.
            self.stopped.store(true, Ordering::Relaxed);
            return false;
        }
        match self.queue.try_send(entry) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.stopped.store(true, Ordering::Relaxed);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The writer task's side: one file, written in order, closed when the relay's handle goes.
struct Writer {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    incomplete_path: PathBuf,
    written: u64,
    max_bytes: u64,
    min_free_bytes: u64,
    directory: PathBuf,
    since_space_check: u64,
    stopped: Arc<AtomicBool>,
    queued_bytes: Arc<AtomicU64>,
    /// The entry being written (reused).
    line: Vec<u8>,
    observer: Arc<dyn RecordingObserver>,
}

impl Writer {
    fn run(mut self, mut entries: mpsc::Receiver<Entry>) {
        self.observer.started();
        let mut incomplete = self.write_all(&mut entries).err();
        if self.close(incomplete).is_err() && incomplete.is_none() {
            incomplete = Some(Incomplete::WriteFailed);
        }
        if let Some(why) = incomplete {
            self.stopped.store(true, Ordering::Relaxed);
            tracing::warn!(
                path = %self.incomplete_path.display(),
                reason = why.label(),
                "the session recording stopped early"
            );
            if let Err(error) = std::fs::rename(&self.path, &self.incomplete_path) {
                tracing::warn!(%error, path = %self.path.display(), "cannot mark the recording incomplete");
            }
        }
        self.observer.ended(incomplete);
    }

    fn write_all(&mut self, entries: &mut mpsc::Receiver<Entry>) -> Result<(), Incomplete> {
        self.write(b"var VNC_frame_data = [\n")?;
        while let Some(entry) = entries.blocking_recv() {
            if self.stopped.load(Ordering::Relaxed) {
                return Err(Incomplete::SlowDisk);
            }
            self.queued_bytes.fetch_sub(entry.len(), Ordering::Relaxed);
            let (prefix, offset, bytes) = match entry {
                Entry::Server(offset, bytes) => (b'{', offset, bytes),
                Entry::Client(offset, bytes) => (b'}', offset, bytes),
            };
            let mut line = std::mem::take(&mut self.line);
            line.clear();
            playback_line(prefix, offset, &bytes, &mut line);
            if self.written + line.len() as u64 > self.max_bytes {
                return Err(Incomplete::SizeCap);
            }
            let written = self.write(&line);
            self.since_space_check += line.len() as u64;
            self.line = line;
            written?;
            if self.since_space_check >= FREE_SPACE_CHECK_BYTES {
                self.since_space_check = 0;
                if free_bytes(&self.directory).is_some_and(|free| free < self.min_free_bytes) {
                    return Err(Incomplete::LowSpace);
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Incomplete> {
        self.file
            .write_all(bytes)
            .map_err(|_| Incomplete::WriteFailed)?;
        self.written += bytes.len() as u64;
        self.observer.wrote(bytes.len() as u64);
        Ok(())
    }

    /// Ends the array (even past the cap: a recording always loads), says why when it is
    /// incomplete, flushes and fsyncs.
    fn close(&mut self, incomplete: Option<Incomplete>) -> std::io::Result<()> {
        let mut end = String::from("'EOF'];\n");
        if let Some(why) = incomplete {
            let _ = writeln!(end, "// ws-proxy: recording incomplete: {}", why.label());
        }
        self.file.write_all(end.as_bytes())?;
        self.file.flush()?;
        self.file.get_ref().sync_all()
    }
}

/// Appends one entry of the playback array to `out`: `'{offset{data',` with the data escaped
/// as websockify does (Python's `unicode_escape` of latin1 text, and `\'`).
pub(crate) fn playback_line(prefix: u8, offset: u64, bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2 + 26);
    out.push(b'\'');
    out.push(prefix);
    out.extend_from_slice(offset.to_string().as_bytes());
    out.push(prefix);
    for &byte in bytes {
        match byte {
            b'\\' | b'\'' => out.extend_from_slice(&[b'\\', byte]),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0x20..=0x7e => out.push(byte),
            _ => out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 15)],
            ]),
        }
    }
    out.extend_from_slice(b"',\n");
}

/// Free bytes for unprivileged users on the filesystem of `path`, if it can be asked.
fn free_bytes(path: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// `20261202T013000Z`: sortable, no characters a file name or shell minds.
fn utc_stamp(time: SystemTime) -> String {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn line(prefix: u8, offset: u64, bytes: &[u8]) -> String {
        let mut out = Vec::new();
        playback_line(prefix, offset, bytes, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_escape_like_python_unicode_escape() {
        assert_eq!(line(b'{', 12, b"RFB 003.008\n"), "'{12{RFB 003.008\\n',\n");
        assert_eq!(
            line(b'}', 0, &[0, 0x7f, 0xff, b'\'', b'\\', b'\t', b'\r']),
            "'}0}\\x00\\x7f\\xff\\'\\\\\\t\\r',\n"
        );
    }

    #[test]
    fn stamps_are_utc_civil_time() {
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        let time = UNIX_EPOCH + Duration::from_secs(1_796_170_000);
        assert_eq!(utc_stamp(time), "20261202T000640Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc_stamp(leap), "20000229T000000Z");
    }
}
