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
    let mut text = String::with_capacity(count * 6);
    for n in 1..=count {
        if n > 1 {
            text.push_str(", ");
        }
        push_placeholder(&mut text, backend, n);
    }
    text
}

/// `rows` tuples of `columns` parameters, for a `VALUES` list: the statement's only parameters.
/// Written into one string: it is built for every batch, and at saturation that is often.
pub(super) fn rows(backend: Backend, columns: usize, rows: usize) -> String {
    let mut text = String::with_capacity(rows * (columns * 6 + 4));
    for row in 0..rows {
        text.push_str(if row == 0 { "(" } else { ", (" });
        for column in 1..=columns {
            if column > 1 {
                text.push_str(", ");
            }
            push_placeholder(&mut text, backend, row * columns + column);
        }
        text.push(')');
    }
    text
}

fn push_placeholder(text: &mut String, backend: Backend, n: usize) {
    match backend {
        Backend::Sqlite => text.push('?'),
        Backend::Postgres => {
            use std::fmt::Write;
            // Writing to a String cannot fail.
            let _ = write!(text, "${n}");
        }
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
