//! Human forms of values for text logs: `10.0.0.1:9470, 10.0.0.2:9470` rather than the
//! Debug form `{10.0.0.1:9470, 10.0.0.2:9470}` or `Some(..)`. JSON logs get the same
//! strings, which machines read as easily.

use std::fmt::Display;

/// The items joined by ", "; "-" for none.
pub fn list<T: Display>(items: impl IntoIterator<Item = T>) -> String {
    let s: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    if s.is_empty() {
        "-".to_string()
    } else {
        s.join(", ")
    }
}

/// The value, or "-" for none.
pub fn opt<T: Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// A duration in seconds with two decimals: "1.25s", not the Debug form
/// "1.250000417s".
pub fn secs(d: std::time::Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_forms() {
        assert_eq!(list(["a", "b"]), "a, b");
        assert_eq!(list(Vec::<u8>::new()), "-");
        assert_eq!(opt(Some(3)), "3");
        assert_eq!(opt(None::<u8>), "-");
        assert_eq!(secs(std::time::Duration::from_millis(1250)), "1.25s");
    }
}
