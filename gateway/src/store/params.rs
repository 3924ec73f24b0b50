//! Parameters for statements that take many values at once. Built from counts only, so no value
//! ever enters the SQL text.
//!
//! PostgreSQL numbers them (`$1, $2, …`). SQLite gets anonymous `?`, numbered by position: sqlx
//! binds a named parameter by asking SQLite its name, and SQLite finds a name by walking the
//! statement's list of them, so binding n numbered parameters costs n² steps. For the hundreds a
//! batch takes that walk was a visible share of the gateway's CPU on the XMPP link (its message
//! aliases are written 320 parameters at a time). Every parameter here appears once, in order,
//! which is what `?` means.

use super::migrate::Backend;

/// `count` parameters, for an `IN (…)` list: the statement's only parameters.
pub(super) fn list(backend: Backend, count: usize) -> String {
    (1..=count).map(|n| placeholder(backend, n)).collect::<Vec<_>>().join(", ")
}

/// `rows` tuples of `columns` parameters, for a `VALUES` list: the statement's only parameters.
pub(super) fn rows(backend: Backend, columns: usize, rows: usize) -> String {
    (0..rows)
        .map(|row| {
            let tuple = (1..=columns).map(|column| placeholder(backend, row * columns + column));
            format!("({})", tuple.collect::<Vec<_>>().join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn placeholder(backend: Backend, n: usize) -> String {
    match backend {
        Backend::Sqlite => "?".to_owned(),
        Backend::Postgres => format!("${n}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_is_numbered_once_in_order() {
        assert_eq!(list(Backend::Postgres, 3), "$1, $2, $3");
        assert_eq!(rows(Backend::Postgres, 2, 1), "($1, $2)");
        assert_eq!(rows(Backend::Postgres, 2, 3), "($1, $2), ($3, $4), ($5, $6)");
    }

    #[test]
    fn sqlite_takes_them_by_position() {
        assert_eq!(list(Backend::Sqlite, 3), "?, ?, ?");
        assert_eq!(rows(Backend::Sqlite, 2, 2), "(?, ?), (?, ?)");
    }
}
