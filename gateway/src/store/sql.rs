use std::path::Path;
use std::time::{Duration, Instant};

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use super::group_commit::{Appended, Appender, WakeRow};
use super::migrate::{self, Backend};
use super::params;
use super::{BoundedAppend, MessageAlias, QueueName, QueueSeq, QueuedEnvelope, Store, StoreError, StoreFuture};
use crate::id::MessageId;
use crate::address::{Address, UserId};
use crate::roster::RosterItem;
use crate::envelope::{DeviceAction, DeviceRegistration, Envelope, Platform, PresenceBody, Timestamp};
use crate::wake::{Notified, Wake, WakeKind, WakeLookup, WakeSeq, WakeSummary, WakeTarget};

/// Devices kept per user; registering one more drops her oldest.
const MAX_DEVICES_PER_USER: i64 = 20;

/// SQLite or PostgreSQL through sqlx's `Any` driver: one set of queries (`$N` placeholders work on
/// both; statements with many values take each backend's own, see `params`), two migration
/// directories.
#[derive(Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    appender: Appender,
}

impl SqlStore {
    /// The embedded default: `switchboard.db` in `data_dir`, created if missing.
    pub async fn open_embedded(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.to_owned(),
            source,
        })?;
        let file = data_dir.join("switchboard.db");
        Self::connect(&format!("sqlite://{}?mode=rwc", file.display())).await
    }

    /// `sqlite://…` or `postgres://…`.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(10));
        let options = if backend == Backend::Sqlite {
            // A connection to a local file does not go stale, and sqlx's check before each use is
            // a round trip to the connection's worker thread: a second one for every statement.
            options.test_before_acquire(false).after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers (replays) run beside the writer; FULL makes a commit
                    // survive power loss, which is what an `ack` promises.
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                    Ok(())
                })
            })
        } else {
            options
        };
        let pool = options.connect(url).await?;
        migrate::run(&pool, backend).await?;
        let appender = Appender::spawn(pool.clone(), backend);
        Ok(Self { pool, backend, appender })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// One append (with its wake, and a bound on her queue if any) through the group commit.
    async fn append(
        &self,
        queue: &QueueName,
        envelope: &Envelope,
        wake: Option<&Wake>,
        limit: Option<u64>,
    ) -> Result<Appended, StoreError> {
        let started = Instant::now();
        let result = async {
            let json = serde_json::to_string(envelope)?;
            let wake = wake.map(WakeRow::new).transpose()?;
            self.appender.append(queue.as_str().to_owned(), json, wake, limit).await
        }
        .await;
        observe("enqueue", started, &result);
        result
    }
}

fn observe<T>(operation: &'static str, started: Instant, result: &Result<T, StoreError>) {
    metrics::histogram!("switchboard_store_seconds", "op" => operation)
        .record(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!("switchboard_store_errors_total", "op" => operation).increment(1);
    }
}

/// Rows per alias INSERT: five parameters each, far below every backend's limit.
const ALIAS_ROWS_PER_INSERT: usize = 64;

fn alias_insert_sql(backend: Backend, rows: usize) -> String {
    format!(
        "INSERT INTO message_aliases (id, peer, foreign_id, user_name, created_ms) VALUES {} ON CONFLICT (id) DO NOTHING",
        params::rows(backend, 5, rows)
    )
}

/// Devices per UPDATE of what they were told: five parameters each.
const NOTIFIED_ROWS_PER_UPDATE: usize = 128;

/// One UPDATE for many devices, each only while it is still the named user's (it may have moved
/// while the send was on its way). Built from the row count only.
fn notified_update_sql(backend: Backend, rows: usize) -> String {
    format!(
        "UPDATE devices SET covered_seq = v.column3, notified_ms = v.column4 FROM (VALUES {}) AS v \
         WHERE devices.platform = v.column1 AND devices.token = v.column2 AND devices.user_name = v.column5",
        params::rows(backend, 5, rows)
    )
}

/// Users per outbox lookup: one parameter each, far below every backend's limit.
pub const USERS_PER_WAKE_LOOKUP: usize = 256;

fn wake_target_from_row(row: &sqlx::any::AnyRow) -> Result<WakeTarget, StoreError> {
    Ok(WakeTarget {
        device: DeviceRegistration {
            action: DeviceAction::Register,
            platform: platform_from_str(row.try_get("platform")?)?,
            token: row.try_get("token")?,
            app: row.try_get("app")?,
            os: row.try_get("os")?,
        },
        covered: WakeSeq(row.try_get("covered_seq")?),
        notified_at: row.try_get::<Option<i64>, _>("notified_ms")?.map(Timestamp),
    })
}

fn alias_from_row(row: sqlx::any::AnyRow) -> Result<MessageAlias, StoreError> {
    let peer: String = row.try_get("peer")?;
    let id: String = row.try_get("id")?;
    let foreign_id: String = row.try_get("foreign_id")?;
    Ok(MessageAlias {
        // Empty: the peer knows it by our id (see `OWN_ID`).
        foreign_id: if foreign_id.is_empty() { id.clone() } else { foreign_id },
        id: MessageId::from_string(id),
        peer: serde_json::from_str(&peer)?,
        user: user_from_row(row.try_get("user_name")?)?,
    })
}

/// The foreign id stored for an alias whose peer knows the message by the gateway's own id (a
/// message the gateway sent): found by its primary key, it stays out of the index by foreign id
/// (migration 5). A foreign id never is empty: such aliases are not stored.
const OWN_ID: &str = "";

/// What the foreign id column holds for `alias`.
fn stored_foreign_id(alias: &MessageAlias) -> &str {
    if alias.foreign_id == alias.id.as_str() { OWN_ID } else { &alias.foreign_id }
}

fn platform_from_str(platform: String) -> Result<Platform, StoreError> {
    Ok(serde_json::from_value(serde_json::Value::String(platform))?)
}

fn wake_from_row(row: &sqlx::any::AnyRow) -> Result<Wake, StoreError> {
    let sender: String = row.try_get("sender")?;
    let kind: String = row.try_get("kind")?;
    Ok(Wake {
        user: user_from_row(row.try_get("user_name")?)?,
        from: serde_json::from_str(&sender)?,
        kind: serde_json::from_value::<WakeKind>(serde_json::Value::String(kind))?,
        text: row.try_get("text")?,
        msg: MessageId::from_string(row.try_get::<String, _>("msg")?),
        at: Timestamp(row.try_get("created_ms")?),
    })
}

fn user_from_row(name: String) -> Result<UserId, StoreError> {
    UserId::parse(&name).map_err(|e| StoreError::Corrupt(serde::de::Error::custom(e)))
}

impl Store for SqlStore {
    fn known_users(&self) -> StoreFuture<'_, Vec<UserId>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT name FROM users").fetch_all(&self.pool).await?;
            rows.into_iter()
                .map(|row| user_from_row(row.try_get::<String, _>("name")?))
                .collect()
        })
    }

    fn ensure_user<'a>(&'a self, user: &'a UserId) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let inserted = sqlx::query(
                "INSERT INTO users (name, created_ms) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(user.as_str())
            .bind(Timestamp::now().0)
            .execute(&self.pool)
            .await?
            .rows_affected();
            Ok(inserted > 0)
        })
    }

    fn enqueue<'a>(&'a self, queue: &'a QueueName, envelope: &'a Envelope) -> StoreFuture<'a, QueueSeq> {
        Box::pin(async move {
            match self.append(queue, envelope, None, None).await? {
                Appended::Stored { seq, .. } => Ok(seq),
                Appended::Full { .. } => Err(StoreError::Batch("refused without a bound".into())),
            }
        })
    }

    fn enqueue_waking<'a>(
        &'a self,
        queue: &'a QueueName,
        envelope: &'a Envelope,
        wake: &'a Wake,
    ) -> StoreFuture<'a, (QueueSeq, WakeSeq)> {
        Box::pin(async move {
            match self.append(queue, envelope, Some(wake), None).await? {
                Appended::Stored { seq, wake: Some(woken), .. } => Ok((seq, woken)),
                _ => Err(StoreError::Batch("the wake was not recorded".into())),
            }
        })
    }

    fn append_bounded<'a>(
        &'a self,
        queue: &'a QueueName,
        envelope: &'a Envelope,
        wake: Option<&'a Wake>,
        limit: u64,
    ) -> StoreFuture<'a, BoundedAppend> {
        Box::pin(async move {
            match self.append(queue, envelope, wake, Some(limit)).await? {
                Appended::Stored { wake: woken, queue_len: Some(queue_len), .. } if woken.is_some() == wake.is_some() => {
                    Ok(BoundedAppend::Stored { queue_len })
                }
                Appended::Full { queue_len } => Ok(BoundedAppend::Full { queue_len }),
                Appended::Stored { .. } => Err(StoreError::Batch("the append was not recorded whole".into())),
            }
        })
    }

    fn queued<'a>(
        &'a self,
        queue: &'a QueueName,
        after: Option<QueueSeq>,
        limit: u32,
    ) -> StoreFuture<'a, Vec<QueuedEnvelope>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = async {
                let rows = sqlx::query(
                    "SELECT seq, envelope FROM offline WHERE user_name = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .bind(queue.as_str())
                .bind(after.map_or(0, |s| s.0))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|row| {
                        let seq = QueueSeq(row.try_get::<i64, _>("seq")?);
                        let json: String = row.try_get("envelope")?;
                        Ok(QueuedEnvelope {
                            seq,
                            envelope: serde_json::from_str(&json)?,
                        })
                    })
                    .collect()
            }
            .await;
            observe("queued", started, &result);
            result
        })
    }

    fn queue_len<'a>(&'a self, queue: &'a QueueName) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let row = sqlx::query("SELECT COUNT(*) AS n FROM offline WHERE user_name = $1")
                .bind(queue.as_str())
                .fetch_one(&self.pool)
                .await?;
            Ok(u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0))
        })
    }

    fn dequeue<'a>(&'a self, queue: &'a QueueName, seqs: &'a [QueueSeq]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let started = Instant::now();
            let result = async {
                let mut tx = self.pool.begin().await?;
                for seq in seqs {
                    sqlx::query("DELETE FROM offline WHERE user_name = $1 AND seq = $2")
                        .bind(queue.as_str())
                        .bind(seq.0)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }
            .await;
            observe("dequeue", started, &result);
            result
        })
    }

    fn expire_queued(&self, cutoff: Timestamp) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let removed = sqlx::query("DELETE FROM offline WHERE created_ms < $1")
                .bind(cutoff.0)
                .execute(&self.pool)
                .await?
                .rows_affected();
            sqlx::query("DELETE FROM wakes WHERE created_ms < $1").bind(cutoff.0).execute(&self.pool).await?;
            Ok(removed)
        })
    }

    fn save_presence<'a>(&'a self, user: &'a UserId, presence: &'a PresenceBody) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let show = serde_json::to_value(presence.show)?;
            sqlx::query("UPDATE users SET show = $2, status = $3 WHERE name = $1")
                .bind(user.as_str())
                .bind(show.as_str().unwrap_or("available").to_owned())
                .bind(presence.status.clone())
                .execute(&self.pool)
                .await?;
            Ok(())
        })
    }

    fn last_presence<'a>(&'a self, user: &'a UserId) -> StoreFuture<'a, Option<PresenceBody>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT show, status FROM users WHERE name = $1")
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await?;
            let Some(row) = row else { return Ok(None) };
            let show: Option<String> = row.try_get("show")?;
            let status: Option<String> = row.try_get("status")?;
            match show {
                Some(show) => Ok(Some(PresenceBody {
                    show: serde_json::from_value(serde_json::Value::String(show))?,
                    status,
                })),
                None => Ok(None),
            }
        })
    }

    fn register_device<'a>(&'a self, user: &'a UserId, device: &'a DeviceRegistration) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            // A token moves with the phone: re-registration by another user takes it over.
            sqlx::query(
                "INSERT INTO devices (platform, token, user_name, app, os, created_ms) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (platform, token) DO UPDATE SET user_name = excluded.user_name, app = excluded.app, os = excluded.os, \
                 covered_seq = CASE WHEN devices.user_name = excluded.user_name THEN devices.covered_seq ELSE 0 END, \
                 notified_ms = CASE WHEN devices.user_name = excluded.user_name THEN devices.notified_ms ELSE NULL END",
            )
            .bind(device.platform.as_str())
            .bind(device.token.clone())
            .bind(user.as_str())
            .bind(device.app.clone())
            .bind(device.os.clone())
            .bind(Timestamp::now().0)
            .execute(&self.pool)
            .await?;
            // Every message fans out to every device: a user cannot register without bound.
            sqlx::query(
                "DELETE FROM devices WHERE user_name = $1 AND created_ms < \
                 (SELECT MIN(created_ms) FROM (SELECT created_ms FROM devices WHERE user_name = $1 ORDER BY created_ms DESC LIMIT $2) AS newest)",
            )
            .bind(user.as_str())
            .bind(MAX_DEVICES_PER_USER)
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn unregister_device<'a>(&'a self, user: &'a UserId, device: &'a DeviceRegistration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let removed = sqlx::query(
                "DELETE FROM devices WHERE platform = $1 AND token = $2 AND user_name = $3",
            )
            .bind(device.platform.as_str())
            .bind(device.token.clone())
            .bind(user.as_str())
            .execute(&self.pool)
            .await?
            .rows_affected();
            Ok(removed > 0)
        })
    }

    fn devices<'a>(&'a self, user: &'a UserId) -> StoreFuture<'a, Vec<DeviceRegistration>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT platform, token, app, os FROM devices WHERE user_name = $1 ORDER BY created_ms, platform, token",
            )
            .bind(user.as_str())
            .fetch_all(&self.pool)
            .await?;
            rows.into_iter()
                .map(|row| {
                    let platform: String = row.try_get("platform")?;
                    Ok(DeviceRegistration {
                        action: crate::envelope::DeviceAction::Register,
                        platform: serde_json::from_value(serde_json::Value::String(platform))?,
                        token: row.try_get("token")?,
                        app: row.try_get("app")?,
                        os: row.try_get("os")?,
                    })
                })
                .collect()
        })
    }

    fn roster_item<'a>(&'a self, owner: &'a UserId, contact: &'a Address) -> StoreFuture<'a, RosterItem> {
        Box::pin(async move {
            let key = serde_json::to_string(contact)?;
            let row = sqlx::query("SELECT sub_to, sub_from, ask_out FROM roster WHERE owner = $1 AND contact = $2")
                .bind(owner.as_str())
                .bind(key)
                .fetch_optional(&self.pool)
                .await?;
            let mut item = RosterItem::new(contact.clone());
            if let Some(row) = row {
                item.to = row.try_get::<i64, _>("sub_to")? != 0;
                item.from = row.try_get::<i64, _>("sub_from")? != 0;
                item.ask = row.try_get::<i64, _>("ask_out")? != 0;
            }
            Ok(item)
        })
    }

    fn save_roster_item<'a>(&'a self, owner: &'a UserId, item: &'a RosterItem) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = serde_json::to_string(&item.contact)?;
            if item.is_empty() {
                sqlx::query("DELETE FROM roster WHERE owner = $1 AND contact = $2")
                    .bind(owner.as_str())
                    .bind(key)
                    .execute(&self.pool)
                    .await?;
                return Ok(());
            }
            sqlx::query(
                "INSERT INTO roster (owner, contact, sub_to, sub_from, ask_out) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (owner, contact) DO UPDATE SET sub_to = excluded.sub_to, sub_from = excluded.sub_from, ask_out = excluded.ask_out",
            )
            .bind(owner.as_str())
            .bind(key)
            .bind(i64::from(item.to))
            .bind(i64::from(item.from))
            .bind(i64::from(item.ask))
            .execute(&self.pool)
            .await?;
            Ok(())
        })
    }

    fn roster<'a>(&'a self, owner: &'a UserId) -> StoreFuture<'a, Vec<RosterItem>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT contact, sub_to, sub_from, ask_out FROM roster WHERE owner = $1 ORDER BY contact")
                .bind(owner.as_str())
                .fetch_all(&self.pool)
                .await?;
            rows.into_iter()
                .map(|row| {
                    let contact: String = row.try_get("contact")?;
                    Ok(RosterItem {
                        contact: serde_json::from_str(&contact)?,
                        to: row.try_get::<i64, _>("sub_to")? != 0,
                        from: row.try_get::<i64, _>("sub_from")? != 0,
                        ask: row.try_get::<i64, _>("ask_out")? != 0,
                    })
                })
                .collect()
        })
    }

    fn save_aliases<'a>(&'a self, aliases: &'a [MessageAlias]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let started = Instant::now();
            let result = async {
                let now = Timestamp::now().0;
                // An empty id names nothing a peer could answer about, and would read back as
                // the gateway's own (`OWN_ID`).
                let named: Vec<&MessageAlias> = aliases.iter().filter(|alias| !alias.foreign_id.is_empty()).collect();
                let mut tx = self.pool.begin().await?;
                // Many rows per statement: each statement is a round trip to the database (for
                // SQLite, to its worker thread), and aliases come by the thousand.
                for chunk in named.chunks(ALIAS_ROWS_PER_INSERT) {
                    // Built from the row count only: no value ever enters the text.
                    let sql = alias_insert_sql(self.backend, chunk.len());
                    // A conversation's messages come one after another: a peer is serialised
                    // once for each run of rows that share it.
                    let mut peers: Vec<String> = Vec::with_capacity(chunk.len());
                    let mut previous: Option<&Address> = None;
                    for alias in chunk {
                        let peer = match peers.last() {
                            Some(json) if previous == Some(&alias.peer) => json.clone(),
                            _ => serde_json::to_string(&alias.peer)?,
                        };
                        previous = Some(&alias.peer);
                        peers.push(peer);
                    }
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for (alias, peer) in chunk.iter().zip(&peers) {
                        query = query
                            .bind(alias.id.as_str())
                            .bind(peer.as_str())
                            .bind(stored_foreign_id(alias))
                            .bind(alias.user.as_str())
                            .bind(now);
                    }
                    query.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }
            .await;
            observe("save_aliases", started, &result);
            result
        })
    }

    fn alias_of<'a>(&'a self, id: &'a MessageId) -> StoreFuture<'a, Option<MessageAlias>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT id, peer, foreign_id, user_name FROM message_aliases WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
            row.map(alias_from_row).transpose()
        })
    }

    fn resolve_alias<'a>(&'a self, peer: &'a Address, foreign_id: &'a str) -> StoreFuture<'a, Option<MessageAlias>> {
        Box::pin(async move {
            if foreign_id.is_empty() {
                return Ok(None);
            }
            // What the peer named, or one of our messages by our id (`OWN_ID`); the condition
            // on `foreign_id <> ''` is the index's own, so that it is used.
            let row = sqlx::query(
                "SELECT id, peer, foreign_id, user_name, created_ms FROM message_aliases \
                 WHERE peer = $1 AND foreign_id = $2 AND foreign_id <> '' \
                 UNION ALL \
                 SELECT id, peer, foreign_id, user_name, created_ms FROM message_aliases \
                 WHERE id = $2 AND peer = $1 AND foreign_id = '' \
                 ORDER BY created_ms DESC LIMIT 1",
            )
            .bind(serde_json::to_string(peer)?)
            .bind(foreign_id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
            row.map(alias_from_row).transpose()
        })
    }

    fn record_wake<'a>(&'a self, wake: &'a Wake) -> StoreFuture<'a, WakeSeq> {
        Box::pin(async move {
            let row = WakeRow::new(wake)?;
            let row = row.insert().fetch_one(&self.pool).await?;
            Ok(WakeSeq(row.try_get::<i64, _>("seq")?))
        })
    }

    fn clear_wakes<'a>(&'a self, user: &'a UserId) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let removed = sqlx::query("DELETE FROM wakes WHERE user_name = $1")
                .bind(user.as_str())
                .execute(&self.pool)
                .await?
                .rows_affected();
            Ok(removed)
        })
    }

    fn users_with_wakes(&self) -> StoreFuture<'_, Vec<UserId>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT DISTINCT user_name FROM wakes").fetch_all(&self.pool).await?;
            rows.into_iter().map(|row| user_from_row(row.try_get("user_name")?)).collect()
        })
    }

    fn wake_summary<'a>(&'a self, user: &'a UserId) -> StoreFuture<'a, Option<WakeSummary>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = async {
                // One round trip: the newest wake, and how many there are.
                let Some(newest) = sqlx::query(
                    "SELECT seq, user_name, sender, kind, text, msg, created_ms, \
                     (SELECT COUNT(*) FROM wakes AS w WHERE w.user_name = $1) AS n \
                     FROM wakes WHERE user_name = $1 ORDER BY seq DESC LIMIT 1",
                )
                .bind(user.as_str())
                .fetch_optional(&self.pool)
                .await?
                else {
                    return Ok(None);
                };
                Ok(Some(WakeSummary {
                    count: u64::try_from(newest.try_get::<i64, _>("n")?).unwrap_or(0),
                    newest_seq: WakeSeq(newest.try_get("seq")?),
                    newest: wake_from_row(&newest)?,
                }))
            }
            .await;
            observe("wake_summary", started, &result);
            result
        })
    }

    fn wake_targets<'a>(&'a self, user: &'a UserId) -> StoreFuture<'a, Vec<WakeTarget>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT platform, token, app, os, covered_seq, notified_ms FROM devices WHERE user_name = $1 ORDER BY created_ms, platform, token",
            )
            .bind(user.as_str())
            .fetch_all(&self.pool)
            .await?;
            rows.iter().map(wake_target_from_row).collect()
        })
    }

    fn wake_lookups<'a>(&'a self, users: &'a [UserId]) -> StoreFuture<'a, Vec<WakeLookup>> {
        Box::pin(async move {
            let started = Instant::now();
            let result = async {
                let mut found = Vec::new();
                // Two round trips for many users: each is a hand-off to the database (for
                // SQLite, to its worker thread), and at saturation that hand-off is the cost.
                for chunk in users.chunks(USERS_PER_WAKE_LOOKUP) {
                    let list = params::list(self.backend, chunk.len());
                    let summaries = format!(
                        "SELECT w.seq, w.user_name, w.sender, w.kind, w.text, w.msg, w.created_ms, c.n \
                         FROM wakes AS w JOIN (SELECT MAX(seq) AS newest, COUNT(*) AS n FROM wakes \
                         WHERE user_name IN ({list}) GROUP BY user_name) AS c ON w.seq = c.newest"
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(summaries));
                    for user in chunk {
                        query = query.bind(user.as_str());
                    }
                    let rows = query.fetch_all(&self.pool).await?;
                    let mut lookups = std::collections::HashMap::with_capacity(rows.len());
                    for row in &rows {
                        let newest = wake_from_row(row)?;
                        let summary = WakeSummary {
                            count: u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0),
                            newest_seq: WakeSeq(row.try_get("seq")?),
                            newest,
                        };
                        lookups.insert(summary.newest.user.clone(), WakeLookup { summary, targets: Vec::new() });
                    }
                    if lookups.is_empty() {
                        continue;
                    }
                    let targets = format!(
                        "SELECT user_name, platform, token, app, os, covered_seq, notified_ms FROM devices \
                         WHERE user_name IN ({list}) ORDER BY created_ms, platform, token"
                    );
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(targets));
                    for user in chunk {
                        query = query.bind(user.as_str());
                    }
                    for row in query.fetch_all(&self.pool).await? {
                        let user = user_from_row(row.try_get("user_name")?)?;
                        if let Some(lookup) = lookups.get_mut(&user) {
                            lookup.targets.push(wake_target_from_row(&row)?);
                        }
                    }
                    found.extend(lookups.into_values());
                }
                Ok(found)
            }
            .await;
            observe("wake_lookups", started, &result);
            result
        })
    }

    fn mark_notified<'a>(&'a self, notified: &'a [Notified]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let started = Instant::now();
            let result = async {
                // A batch kept after a failed write may name a device twice: the newest counts.
                let mut seen = std::collections::HashSet::with_capacity(notified.len());
                let newest: Vec<&Notified> = notified
                    .iter()
                    .rev()
                    .filter(|device| seen.insert((device.platform, device.token.as_str(), &device.user)))
                    .collect();
                let mut tx = self.pool.begin().await?;
                for chunk in newest.chunks(NOTIFIED_ROWS_PER_UPDATE) {
                    let mut update = sqlx::query(sqlx::AssertSqlSafe(notified_update_sql(self.backend, chunk.len())));
                    for device in chunk {
                        update = update
                            .bind(device.platform.as_str())
                            .bind(device.token.clone())
                            .bind(device.covered.0)
                            .bind(device.at.0)
                            .bind(device.user.as_str());
                    }
                    update.execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }
            .await;
            observe("mark_notified", started, &result);
            result
        })
    }

    fn remove_device<'a>(&'a self, platform: Platform, token: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let removed = sqlx::query("DELETE FROM devices WHERE platform = $1 AND token = $2")
                .bind(platform.as_str())
                .bind(token.to_owned())
                .execute(&self.pool)
                .await?
                .rows_affected();
            Ok(removed > 0)
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::Address;
    use crate::envelope::{Body, MessageBody, MessageKind};

    fn message(to: &UserId, text: &str) -> Envelope {
        Envelope::new(
            Address::user(UserId::parse("sender").expect("valid")),
            Address::user(to.clone()),
            Body::Message(MessageBody {
                body: text.into(),
                thread: None,
                subject: None,
                kind: MessageKind::Chat,
            }),
        )
    }

    #[tokio::test]
    async fn queue_survives_reopen_in_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let alice = UserId::parse("alice").expect("valid");
        {
            let store = SqlStore::open_embedded(dir.path()).await.expect("open");
            assert!(store.ensure_user(&alice).await.expect("user"));
            assert!(!store.ensure_user(&alice).await.expect("user again"));
            for text in ["one", "two", "three"] {
                store.enqueue(&QueueName::user(&alice), &message(&alice, text)).await.expect("enqueue");
            }
        }
        let store = SqlStore::open_embedded(dir.path()).await.expect("reopen");
        assert_eq!(store.known_users().await.expect("users"), vec![alice.clone()]);
        let queue = QueueName::user(&alice);
        let queued = store.queued(&queue, None, 10).await.expect("queued");
        let texts: Vec<_> = queued
            .iter()
            .map(|q| match &q.envelope.body {
                Body::Message(m) => m.body.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(texts, ["one", "two", "three"]);
        let page = store.queued(&queue, Some(queued[0].seq), 1).await.expect("page");
        assert_eq!(page.len(), 1);
        assert_eq!(page[0].seq, queued[1].seq);
        store.dequeue(&queue, &[queued[0].seq, queued[1].seq]).await.expect("dequeue");
        assert_eq!(store.queue_len(&queue).await.expect("len"), 1);
    }
}
