//! Group commit for offline appends.
//!
//! Every user's mailbox appends to the offline queue on its own, and each append must be durable
//! before its sender hears `ack`. Committed one by one, each costs a disk sync; here one writer
//! task takes every append that is waiting, commits them in one transaction, and answers each
//! caller only after that commit. Under load the batches grow by themselves (appends queue up
//! while a commit syncs); alone, an append is committed at once.

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

use super::migrate::Backend;
use super::params;
use super::{QueueSeq, StoreError};
use crate::envelope::Timestamp;
use crate::wake::{Wake, WakeSeq};

/// Appends per transaction at most: bounds the time one commit holds the write lock.
const MAX_BATCH: usize = 256;

/// A wake row, serialised.
pub(super) struct WakeRow {
    pub user: String,
    pub sender: String,
    pub kind: &'static str,
    pub text: Option<String>,
    pub msg: String,
    pub at: i64,
}

impl WakeRow {
    pub(super) fn new(wake: &Wake) -> Result<Self, serde_json::Error> {
        Ok(Self {
            user: wake.user.as_str().to_owned(),
            sender: serde_json::to_string(&wake.from)?,
            kind: wake.kind.as_str(),
            text: wake.text.clone(),
            msg: wake.msg.as_str().to_owned(),
            at: wake.at.0,
        })
    }

    pub(super) const INSERT: &str = "INSERT INTO wakes (user_name, sender, kind, text, msg, created_ms) VALUES ";
    pub(super) const COLUMNS: usize = 6;

    /// The statement that records this wake alone.
    pub(super) fn insert(&self) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments> {
        self.bind(sqlx::query(
            "INSERT INTO wakes (user_name, sender, kind, text, msg, created_ms) VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
        ))
    }

    /// Binds this wake's [`Self::COLUMNS`] values, in [`Self::INSERT`]'s order.
    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
        query
            .bind(self.user.as_str())
            .bind(self.sender.as_str())
            .bind(self.kind)
            .bind(self.text.clone())
            .bind(self.msg.as_str())
            .bind(self.at)
    }
}

/// What became of one append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Appended {
    Stored {
        seq: QueueSeq,
        wake: Option<WakeSeq>,
        /// Her queue's length after it, when the append asked for a bound.
        queue_len: Option<u64>,
    },
    /// Refused: her queue already held its bound.
    Full { queue_len: u64 },
}

type Reply = oneshot::Sender<Result<Appended, String>>;

struct Append {
    queue: String,
    envelope: String,
    wake: Option<WakeRow>,
    /// Refuse it when her queue already holds this many (counted in the same transaction).
    limit: Option<u64>,
    reply: Reply,
}

#[derive(Clone)]
pub(super) struct Appender {
    appends: mpsc::Sender<Append>,
}

impl Appender {
    pub(super) fn spawn(pool: AnyPool, backend: Backend) -> Self {
        let (appends, inbox) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(run(Writer { pool, backend }, inbox));
        Self { appends }
    }

    /// Durable once it returns. With a `limit`, her queue is counted in the same transaction
    /// and the append refused when it already holds that many.
    pub(super) async fn append(
        &self,
        queue: String,
        envelope: String,
        wake: Option<WakeRow>,
        limit: Option<u64>,
    ) -> Result<Appended, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.appends
            .send(Append { queue, envelope, wake, limit, reply })
            .await
            .map_err(|_| StoreError::Batch("the store's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Batch("the store's writer has stopped".into()))?
            .map_err(StoreError::Batch)
    }
}

struct Writer {
    pool: AnyPool,
    backend: Backend,
}

impl Writer {
    /// A group commit reads (the queues' lengths) before it writes. SQLite cannot turn a read
    /// transaction into a write while another connection writes, and says so at once instead of
    /// waiting (`database is locked`); so it takes the write lock from the start, waiting for it
    /// like any other writer.
    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }
}

async fn run(writer: Writer, mut inbox: mpsc::Receiver<Append>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = inbox.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(append) => batch.push(append),
                Err(_) => break,
            }
        }
        metrics::histogram!("switchboard_store_batch_size").record(batch.len() as f64);
        match commit(&writer, &batch).await {
            Ok(seqs) => {
                for (append, seqs) in batch.drain(..).zip(seqs) {
                    let _ = append.reply.send(Ok(seqs));
                }
            }
            // Nothing of the batch was committed. One append's failure must not fail the others:
            // each is tried alone, and whoever still fails answers its sender with an error,
            // never an `ack`.
            Err(error) if batch.len() == 1 => {
                for append in batch.drain(..) {
                    let _ = append.reply.send(Err(error.to_string()));
                }
            }
            Err(_) => {
                for append in batch.drain(..) {
                    let result = commit(&writer, std::slice::from_ref(&append)).await;
                    let answer = result.map_err(|e| e.to_string()).and_then(|mut appended| appended.pop().ok_or_else(|| "nothing committed".to_owned()));
                    let _ = append.reply.send(answer);
                }
            }
        }
    }
}

/// A few statements per batch whatever its size: each statement is a round trip to the
/// database (for SQLite, a hand-off to its worker thread and back), and at saturation those
/// hand-offs, not the SQL, are the cost.
async fn commit(writer: &Writer, batch: &[Append]) -> Result<Vec<Appended>, sqlx::Error> {
    let now = Timestamp::now().0;
    let mut tx = writer.begin().await?;
    let mut lengths = queue_lengths(writer.backend, &mut tx, batch).await?;
    // Decided in arrival order, so an earlier append in the batch counts against a later one.
    // `Err` is a refusal; `Ok` the length after it, for an append that asked for a bound.
    let decisions: Vec<Result<Option<u64>, u64>> = batch
        .iter()
        .map(|append| match (append.limit, lengths.get_mut(append.queue.as_str())) {
            (Some(limit), Some(length)) if *length >= limit => Err(*length),
            (limit, Some(length)) => {
                *length += 1;
                Ok(limit.map(|_| *length))
            }
            (_, None) => Ok(None),
        })
        .collect();
    let stored: Vec<&Append> = batch.iter().zip(&decisions).filter(|(_, decision)| decision.is_ok()).map(|(append, _)| append).collect();
    let mut queued = Vec::new();
    let mut woken = Vec::new();
    if !stored.is_empty() {
        let mut offline = sqlx::query(sqlx::AssertSqlSafe(values_insert(
            writer.backend,
            "INSERT INTO offline (user_name, created_ms, envelope) VALUES ",
            3,
            stored.len(),
        )));
        for append in &stored {
            offline = offline.bind(append.queue.as_str()).bind(now).bind(append.envelope.as_str());
        }
        queued = in_row_order(offline.fetch_all(&mut *tx).await?)?;
        let wakes: Vec<&WakeRow> = stored.iter().filter_map(|append| append.wake.as_ref()).collect();
        if !wakes.is_empty() {
            let mut insert = sqlx::query(sqlx::AssertSqlSafe(values_insert(writer.backend, WakeRow::INSERT, WakeRow::COLUMNS, wakes.len())));
            for wake in wakes {
                insert = wake.bind(insert);
            }
            woken = in_row_order(insert.fetch_all(&mut *tx).await?)?;
        }
    }
    tx.commit().await?;

    let (mut queued, mut woken) = (queued.into_iter(), woken.into_iter());
    let missing = || sqlx::Error::Protocol("an insert returned fewer rows than it was given".into());
    batch
        .iter()
        .zip(decisions)
        .map(|(append, decision)| match decision {
            Err(queue_len) => Ok(Appended::Full { queue_len }),
            Ok(queue_len) => Ok(Appended::Stored {
                seq: QueueSeq(queued.next().ok_or_else(missing)?),
                wake: match append.wake {
                    Some(_) => Some(WakeSeq(woken.next().ok_or_else(missing)?)),
                    None => None,
                },
                queue_len,
            }),
        })
        .collect()
}

/// How many envelopes wait in each queue that an append of the batch asked a bound for (and
/// only those): one statement for the batch.
async fn queue_lengths<'b>(
    backend: Backend,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    batch: &'b [Append],
) -> Result<std::collections::HashMap<&'b str, u64>, sqlx::Error> {
    let mut lengths: std::collections::HashMap<&str, u64> =
        batch.iter().filter(|append| append.limit.is_some()).map(|append| (append.queue.as_str(), 0)).collect();
    if lengths.is_empty() {
        return Ok(lengths);
    }
    let queues: Vec<&str> = lengths.keys().copied().collect();
    let list = params::list(backend, queues.len());
    let sql = format!("SELECT user_name, COUNT(*) AS n FROM offline WHERE user_name IN ({list}) GROUP BY user_name");
    let mut count = sqlx::query(sqlx::AssertSqlSafe(sql));
    for queue in &queues {
        count = count.bind(*queue);
    }
    for row in count.fetch_all(&mut **tx).await? {
        let queue: String = row.try_get("user_name")?;
        if let Some(length) = lengths.get_mut(queue.as_str()) {
            *length = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
        }
    }
    Ok(lengths)
}

/// `<insert>($1, …), (…), …` with `RETURNING seq`.
fn values_insert(backend: Backend, insert: &str, columns: usize, rows: usize) -> String {
    format!("{insert}{} RETURNING seq", params::rows(backend, columns, rows))
}

/// One statement numbers its rows in the order of its VALUES list (a table's sequence or SQLite's
/// rowid is taken row by row), but neither backend promises the order RETURNING lists them in:
/// sorted, the n-th seq is the n-th row's.
fn in_row_order(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<i64>, sqlx::Error> {
    let mut seqs = rows.iter().map(|row| row.try_get::<i64, _>("seq")).collect::<Result<Vec<_>, _>>()?;
    seqs.sort_unstable();
    Ok(seqs)
}
