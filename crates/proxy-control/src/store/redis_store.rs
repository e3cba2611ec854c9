//! The many-replica [`StateStore`]: Redis (`redis://` or `rediss://`), through one multiplexed
//! connection that reconnects by itself and carries the command channel's subscription (RESP3
//! push messages, resubscribed after a reconnect).
//!
//! Keys, under a prefix (default `ws-proxy:`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `sessions` | sorted set | every session id, scored by its lease's end (ms) |
//! | `session:{id}` | string, TTL = lease | the session's record (JSON) |
//! | `user:{user_id}`, `lab_instance:{id}`, `vm:{namespace}/{vmi}` | sorted sets | the ids counting against each limit, scored like `sessions` |
//! | `jti:{sha256}` | string, TTL = token expiry | a used single-use token id's hash |
//! | `revocations` | hash | revocation target → revocation (JSON) |
//! | `commands` | pub/sub channel | close and revoke commands (JSON) |
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands as _, Client, IntoConnectionInfo, ProtocolVersion, PushKind, Script};
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, warn};

use super::{
    Command, FirstUse, LimitScope, Opened, Revocation, RevocationTarget, SessionLimits,
    SessionRecord, StateStore, StoreError,
};

/// How long one store request may take before it counts as failed (and the outage policy
/// applies): short, because a session waits for it.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Commands waiting for a slow receiver.
const COMMAND_QUEUE: usize = 1024;

/// Where the Redis store is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://host:port[/db]` or `rediss://…` (TLS).
    pub url: String,
    /// PEM CA certificates for `rediss://` (default: the system's).
    pub ca_file: Option<PathBuf>,
    /// ACL user name (default: none, or the one in the URL).
    pub username: Option<String>,
    /// File holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// Prepended to every key and the channel, so several deployments can share one Redis.
    pub key_prefix: String,
}

impl RedisSettings {
    /// Settings for `url` with the default prefix and no credentials.
    pub fn new(url: impl Into<String>) -> Self {
        RedisSettings {
            url: url.into(),
            ca_file: None,
            username: None,
            password_file: None,
            key_prefix: "ws-proxy:".to_owned(),
        }
    }
}

/// Unusable Redis settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisSettingsError {
    /// The URL is not a Redis URL.
    #[error("WS_PROXY_STATE_URL must be redis://… or rediss://…")]
    Scheme,
    /// The URL does not parse.
    #[error("invalid WS_PROXY_STATE_URL")]
    Url(#[source] redis::RedisError),
    /// A CA file was given for a plain `redis://` URL.
    #[error("WS_PROXY_STATE_CA_FILE needs a rediss:// URL")]
    CaWithoutTls,
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The Redis [`StateStore`]. Connects lazily on the first request, inside the engine's runtime.
pub struct RedisStateStore {
    client: Client,
    prefix: String,
    connection: OnceLock<ConnectionManager>,
    commands: broadcast::Sender<Command>,
    open_script: Script,
}

impl std::fmt::Debug for RedisStateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStateStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Registers a session unless a limit is reached, atomically. KEYS: sessions, user, lab
/// instance, vm, record. ARGV: now ms, lease end ms, id, record JSON, lease ms, then the three
/// limits (-1 for none). Returns `ok` or the scope over its limit.
const OPEN_SESSION: &str = r"
local now = tonumber(ARGV[1])
local scopes = {'user', 'lab_instance', 'vm'}
for i = 2, 4 do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now)
  local limit = tonumber(ARGV[4 + i])
  if limit >= 0 and redis.call('ZCARD', KEYS[i]) >= limit then
    return scopes[i - 1]
  end
end
for i = 1, 4 do
  redis.call('ZADD', KEYS[i], ARGV[2], ARGV[3])
  redis.call('PEXPIRE', KEYS[i], ARGV[5])
end
redis.call('SET', KEYS[5], ARGV[4], 'PX', ARGV[5])
return 'ok'
";

fn millis_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn lease_millis(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn limit_arg(limit: Option<usize>) -> i64 {
    limit.map_or(-1, |limit| i64::try_from(limit).unwrap_or(i64::MAX))
}

impl RedisStateStore {
    /// A store with `settings`; credential and CA files are read now, nothing is dialled.
    pub fn new(settings: &RedisSettings) -> Result<Self, RedisSettingsError> {
        let tls = if settings.url.starts_with("rediss://") {
            true
        } else if settings.url.starts_with("redis://") {
            false
        } else {
            return Err(RedisSettingsError::Scheme);
        };
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|source| RedisSettingsError::File {
                path: path.clone(),
                source,
            })
        };
        let info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(RedisSettingsError::Url)?;
        let mut redis = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        if let Some(username) = &settings.username {
            redis = redis.set_username(username);
        }
        if let Some(path) = &settings.password_file {
            let password = String::from_utf8_lossy(&read(path)?).into_owned();
            redis = redis.set_password(password.trim_end_matches(['\r', '\n']));
        }
        let info = info.set_redis_settings(redis);
        let client = match (&settings.ca_file, tls) {
            (Some(_), false) => return Err(RedisSettingsError::CaWithoutTls),
            (Some(path), true) => Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(read(path)?),
                },
            ),
            (None, _) => Client::open(info),
        }
        .map_err(RedisSettingsError::Url)?;
        Ok(Self {
            client,
            prefix: settings.key_prefix.clone(),
            connection: OnceLock::new(),
            commands: broadcast::channel(COMMAND_QUEUE).0,
            open_script: Script::new(OPEN_SESSION),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn session_key(&self, id: &str) -> String {
        self.key(&format!("session:{id}"))
    }

    fn scope_keys(&self, session: &SessionRecord) -> [String; 3] {
        [
            self.key(&format!("user:{}", session.user_id)),
            self.key(&format!("lab_instance:{}", session.lab_instance_id)),
            self.key(&format!("vm:{}", session.vm_key())),
        ]
    }

    fn revocation_field(target: &RevocationTarget) -> String {
        match target {
            RevocationTarget::UserId(id) => format!("user_id:{id}"),
            RevocationTarget::LabInstanceId(id) => format!("lab_instance_id:{id}"),
            RevocationTarget::JtiSha256(hash) => format!("jti_sha256:{hash}"),
        }
    }

    /// The shared connection, created (not yet dialled) on first use together with the task
    /// that turns the command channel's messages into [`Command`]s.
    fn connection(&self) -> Result<ConnectionManager, StoreError> {
        if let Some(connection) = self.connection.get() {
            return Ok(connection.clone());
        }
        let (push_sender, pushes) = mpsc::unbounded_channel();
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2))
            .set_push_sender(push_sender)
            .set_automatic_resubscription();
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(StoreError::Redis)?;
        if self.connection.set(manager.clone()).is_err() {
            // Another caller won the race; its connection and task are the ones in use.
            return self.connection.get().cloned().ok_or_else(|| {
                StoreError::Redis(redis::RedisError::from((
                    redis::ErrorKind::Client,
                    "state store connection lost",
                )))
            });
        }
        tokio::spawn(forward_commands(
            manager.clone(),
            self.key("commands"),
            pushes,
            self.commands.clone(),
        ));
        Ok(manager)
    }
}

/// Subscribes to the command channel (retrying until Redis answers; the connection resubscribes
/// by itself after later reconnects) and forwards each message as a [`Command`].
async fn forward_commands(
    mut connection: ConnectionManager,
    channel: String,
    mut pushes: mpsc::UnboundedReceiver<redis::PushInfo>,
    commands: broadcast::Sender<Command>,
) {
    let mut pause = Duration::from_millis(100);
    while let Err(error) = connection.subscribe(&channel).await {
        debug!(%error, "subscribing to the state store's command channel failed; retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
    while let Some(push) = pushes.recv().await {
        if push.kind != PushKind::Message {
            continue;
        }
        let Some(redis::Value::BulkString(payload)) = push.data.get(1) else {
            continue;
        };
        match serde_json::from_slice::<Command>(payload) {
            Ok(command) => {
                let _ = commands.send(command);
            }
            Err(error) => warn!(%error, "ignoring an unreadable command from the state store"),
        }
    }
}

#[async_trait]
impl StateStore for RedisStateStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn open_session(
        &self,
        session: &Arc<SessionRecord>,
        limits: &SessionLimits,
        lease: Duration,
    ) -> Result<Opened, StoreError> {
        let mut connection = self.connection()?;
        let now = SystemTime::now();
        let [user, lab_instance, vm] = self.scope_keys(session);
        let record = serde_json::to_string(&**session).map_err(StoreError::Corrupt)?;
        let answer: String = self
            .open_script
            .key(self.key("sessions"))
            .key(user)
            .key(lab_instance)
            .key(vm)
            .key(self.session_key(&session.id))
            .arg(millis_since_epoch(now))
            .arg(millis_since_epoch(now + lease))
            .arg(&session.id)
            .arg(record)
            .arg(lease_millis(lease))
            .arg(limit_arg(limits.per_user))
            .arg(limit_arg(limits.per_lab_instance))
            .arg(limit_arg(limits.per_vm))
            .invoke_async(&mut connection)
            .await
            .map_err(StoreError::Redis)?;
        // The script answers `ok` or the label of the scope over its limit.
        Ok([LimitScope::User, LimitScope::LabInstance, LimitScope::Vm]
            .into_iter()
            .find(|scope| scope.label() == answer)
            .map_or(Opened::Yes, Opened::OverLimit))
    }

    async fn renew_sessions(
        &self,
        sessions: &[SessionRecord],
        lease: Duration,
    ) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        let now = SystemTime::now();
        let until = millis_since_epoch(now + lease);
        let lease_ms = lease_millis(lease);
        let all = self.key("sessions");
        let mut pipe = redis::pipe();
        pipe.zrembyscore(&all, "-inf", millis_since_epoch(now))
            .ignore();
        for session in sessions {
            let record = serde_json::to_string(session).map_err(StoreError::Corrupt)?;
            for key in std::iter::once(all.clone()).chain(self.scope_keys(session)) {
                pipe.zadd(&key, &session.id, until)
                    .ignore()
                    .pexpire(&key, i64::try_from(lease_ms).unwrap_or(i64::MAX))
                    .ignore();
            }
            pipe.pset_ex(self.session_key(&session.id), record, lease_ms)
                .ignore();
        }
        if sessions.is_empty() {
            pipe.pexpire(&all, i64::try_from(lease_ms).unwrap_or(i64::MAX))
                .ignore();
        }
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(StoreError::Redis)
    }

    async fn end_session(&self, session: &SessionRecord) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        let mut pipe = redis::pipe();
        for key in std::iter::once(self.key("sessions")).chain(self.scope_keys(session)) {
            pipe.zrem(key, &session.id).ignore();
        }
        pipe.del(self.session_key(&session.id)).ignore();
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(StoreError::Redis)
    }

    async fn sessions(&self) -> Result<Vec<SessionRecord>, StoreError> {
        let mut connection = self.connection()?;
        let all = self.key("sessions");
        let ids: Vec<String> = connection
            .zrangebyscore(&all, millis_since_epoch(SystemTime::now()), "+inf")
            .await
            .map_err(StoreError::Redis)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| self.session_key(id)).collect();
        let records: Vec<Option<String>> =
            connection.mget(&keys).await.map_err(StoreError::Redis)?;
        records
            .into_iter()
            .flatten()
            .map(|record| serde_json::from_str(&record).map_err(StoreError::Corrupt))
            .collect()
    }

    async fn first_use(
        &self,
        token_id_hash: &str,
        expires_at: SystemTime,
    ) -> Result<FirstUse, StoreError> {
        let mut connection = self.connection()?;
        let remaining = expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .max(Duration::from_secs(1));
        let stored: Option<String> = redis::cmd("SET")
            .arg(self.key(&format!("jti:{token_id_hash}")))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(lease_millis(remaining))
            .query_async(&mut connection)
            .await
            .map_err(StoreError::Redis)?;
        Ok(if stored.is_some() {
            FirstUse::Yes
        } else {
            FirstUse::AlreadyUsed
        })
    }

    async fn forget_use(&self, token_id_hash: &str) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        connection
            .del::<_, ()>(self.key(&format!("jti:{token_id_hash}")))
            .await
            .map_err(StoreError::Redis)
    }

    async fn revoke(&self, revocation: &Revocation) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        let value = serde_json::to_string(revocation).map_err(StoreError::Corrupt)?;
        connection
            .hset::<_, _, _, ()>(
                self.key("revocations"),
                Self::revocation_field(&revocation.target),
                value,
            )
            .await
            .map_err(StoreError::Redis)
    }

    async fn lift(&self, target: &RevocationTarget) -> Result<bool, StoreError> {
        let mut connection = self.connection()?;
        let removed: u64 = connection
            .hdel(self.key("revocations"), Self::revocation_field(target))
            .await
            .map_err(StoreError::Redis)?;
        Ok(removed > 0)
    }

    async fn revocations(&self) -> Result<Vec<Revocation>, StoreError> {
        let mut connection = self.connection()?;
        let key = self.key("revocations");
        let stored: Vec<(String, String)> =
            connection.hgetall(&key).await.map_err(StoreError::Redis)?;
        let now = SystemTime::now();
        let mut in_force = Vec::with_capacity(stored.len());
        let mut expired = Vec::new();
        for (field, value) in stored {
            let revocation: Revocation =
                serde_json::from_str(&value).map_err(StoreError::Corrupt)?;
            if revocation.in_force(now) {
                in_force.push(revocation);
            } else {
                expired.push(field);
            }
        }
        if !expired.is_empty() {
            connection
                .hdel::<_, _, ()>(&key, expired)
                .await
                .map_err(StoreError::Redis)?;
        }
        Ok(in_force)
    }

    async fn publish(&self, command: &Command) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        let payload = serde_json::to_string(command).map_err(StoreError::Corrupt)?;
        connection
            .publish::<_, _, ()>(self.key("commands"), payload)
            .await
            .map_err(StoreError::Redis)
    }

    fn commands(&self) -> broadcast::Receiver<Command> {
        let receiver = self.commands.subscribe();
        if let Err(error) = self.connection() {
            warn!(error = %proxy_core::ErrorChain(&error), "cannot set up the state store connection");
        }
        receiver
    }
}
