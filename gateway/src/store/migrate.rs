//! Schema migrations, applied in order at start; each runs once, recorded in
//! `schema_migrations`. The two backends differ in DDL only where a table has an auto-increment
//! column, so those versions have a file per backend and the rest live in `migrations/common/`.

use sqlx::AnyPool;

use super::StoreError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

const SQLITE: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/sqlite/0001_init.sql")),
    (2, include_str!("../../migrations/common/0002_roster.sql")),
    (3, include_str!("../../migrations/common/0003_aliases.sql")),
    (4, include_str!("../../migrations/sqlite/0004_wakes.sql")),
    (5, include_str!("../../migrations/common/0005_aliases_by_own_id.sql")),
];
const POSTGRES: &[(i64, &str)] = &[
    (1, include_str!("../../migrations/postgres/0001_init.sql")),
    (2, include_str!("../../migrations/common/0002_roster.sql")),
    (3, include_str!("../../migrations/common/0003_aliases.sql")),
    (4, include_str!("../../migrations/postgres/0004_wakes.sql")),
    (5, include_str!("../../migrations/common/0005_aliases_by_own_id.sql")),
];

pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let create = "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY)";
    // IF NOT EXISTS takes no lock on PostgreSQL: of nodes starting at once, all but one may fail
    // on the catalog's unique index, once the winner has committed. The table exists then.
    if sqlx::query(create).execute(pool).await.is_err() {
        sqlx::query(create).execute(pool).await?;
    }
    let migrations = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    for &(version, script) in migrations {
        let mut tx = pool.begin().await?;
        // Several nodes may start at once against one PostgreSQL: the insert is the lock.
        let claimed = sqlx::query(
            "INSERT INTO schema_migrations (version) VALUES ($1) ON CONFLICT (version) DO NOTHING",
        )
        .bind(version)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if claimed == 0 {
            continue;
        }
        for statement in script.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            sqlx::query(statement)
                .execute(&mut *tx)
                .await
                .map_err(|source| StoreError::Migration { version, source })?;
        }
        tx.commit().await?;
    }
    Ok(())
}
