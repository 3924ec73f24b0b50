//! Group commit for offline appends.
//!
//! Every user's mailbox appends to the offline queue on its own, and each append must be durable
//! before its sender hears `ack`. Committed one by one, each costs a disk sync; here one writer
//! task takes every append that is waiting, commits them in one transaction, and answers each
//! caller only after that commit. Under load the batches grow by themselves (appends queue up
//! while a commit syncs); alone, an append is committed at once.

use sqlx::{AnyPool, Row};
use tokio::sync::{mpsc, oneshot};

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

type Reply = oneshot::Sender<Result<(QueueSeq, Option<WakeSeq>), String>>;

struct Append {
    queue: String,
    envelope: String,
    wake: Option<WakeRow>,
    reply: Reply,
}

#[derive(Clone)]
pub(super) struct Appender {
    appends: mpsc::Sender<Append>,
}

impl Appender {
    pub(super) fn spawn(pool: AnyPool) -> Self {
        let (appends, inbox) = mpsc::channel(MAX_BATCH * 4);
        tokio::spawn(run(pool, inbox));
        Self { appends }
    }

    /// Durable once it returns.
    pub(super) async fn append(
        &self,
        queue: String,
        envelope: String,
        wake: Option<WakeRow>,
    ) -> Result<(QueueSeq, Option<WakeSeq>), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.appends
            .send(Append { queue, envelope, wake, reply })
            .await
            .map_err(|_| StoreError::Batch("the store's writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Batch("the store's writer has stopped".into()))?
            .map_err(StoreError::Batch)
    }
}

async fn run(pool: AnyPool, mut inbox: mpsc::Receiver<Append>) {
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
        match commit(&pool, &batch).await {
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
                    let result = commit(&pool, std::slice::from_ref(&append)).await;
                    let answer = result.map_err(|e| e.to_string()).and_then(|mut seqs| seqs.pop().ok_or_else(|| "nothing committed".to_owned()));
                    let _ = append.reply.send(answer);
                }
            }
        }
    }
}

/// Three statements per batch whatever its size: each statement is a round trip to the database
/// (for SQLite, a hand-off to its worker thread and back), and at saturation those hand-offs,
/// not the SQL, are the cost.
async fn commit(pool: &AnyPool, batch: &[Append]) -> Result<Vec<(QueueSeq, Option<WakeSeq>)>, sqlx::Error> {
    let now = Timestamp::now().0;
    let mut tx = pool.begin().await?;
    let mut offline = sqlx::query(sqlx::AssertSqlSafe(values_insert(
        "INSERT INTO offline (user_name, created_ms, envelope) VALUES ",
        3,
        batch.len(),
    )));
    for append in batch {
        offline = offline.bind(append.queue.as_str()).bind(now).bind(append.envelope.as_str());
    }
    let queued = in_row_order(offline.fetch_all(&mut *tx).await?)?;

    let wakes: Vec<&WakeRow> = batch.iter().filter_map(|append| append.wake.as_ref()).collect();
    let mut woken = Vec::new();
    if !wakes.is_empty() {
        let mut insert = sqlx::query(sqlx::AssertSqlSafe(values_insert(WakeRow::INSERT, WakeRow::COLUMNS, wakes.len())));
        for wake in wakes {
            insert = wake.bind(insert);
        }
        woken = in_row_order(insert.fetch_all(&mut *tx).await?)?;
    }
    tx.commit().await?;

    let mut woken = woken.into_iter();
    Ok(batch
        .iter()
        .zip(queued)
        .map(|(append, seq)| (QueueSeq(seq), append.wake.as_ref().and_then(|_| woken.next()).map(WakeSeq)))
        .collect())
}

/// `<insert>($1, …, $columns), (…), …` with `RETURNING seq`: built from counts only, so no value
/// ever enters the text.
fn values_insert(insert: &str, columns: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(insert.len() + rows * columns * 5 + 16);
    sql.push_str(insert);
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..columns {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(row * columns + column + 1).to_string());
        }
        sql.push(')');
    }
    sql.push_str(" RETURNING seq");
    sql
}

/// One statement numbers its rows in the order of its VALUES list (a table's sequence or SQLite's
/// rowid is taken row by row), but neither backend promises the order RETURNING lists them in:
/// sorted, the n-th seq is the n-th row's.
fn in_row_order(rows: Vec<sqlx::any::AnyRow>) -> Result<Vec<i64>, sqlx::Error> {
    let mut seqs = rows.iter().map(|row| row.try_get::<i64, _>("seq")).collect::<Result<Vec<_>, _>>()?;
    seqs.sort_unstable();
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_values_insert_numbers_every_parameter_once() {
        assert_eq!(values_insert("INSERT INTO t (a, b) VALUES ", 2, 1), "INSERT INTO t (a, b) VALUES ($1, $2) RETURNING seq");
        assert_eq!(
            values_insert("INSERT INTO t (a, b) VALUES ", 2, 3),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4), ($5, $6) RETURNING seq"
        );
    }
}
