//! Numbered parameters for statements that take many values at once. Built from counts only, so
//! no value ever enters the SQL text.

/// `$1, $2, …`: `count` of them, for an `IN (…)` list.
pub(super) fn list(count: usize) -> String {
    (1..=count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// `($1, …, $columns), ($columns + 1, …), …`: `rows` tuples, for a `VALUES` list.
pub(super) fn rows(columns: usize, rows: usize) -> String {
    (0..rows)
        .map(|row| format!("({})", (1..=columns).map(|column| format!("${}", row * columns + column)).collect::<Vec<_>>().join(", ")))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_is_numbered_once_in_order() {
        assert_eq!(list(3), "$1, $2, $3");
        assert_eq!(rows(2, 1), "($1, $2)");
        assert_eq!(rows(2, 3), "($1, $2), ($3, $4), ($5, $6)");
    }
}
