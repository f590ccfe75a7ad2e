//! Parsers of the tools' machine-readable reports into the common result shapes. Each takes
//! the report's bytes and the project root (to make paths workspace-relative).

pub mod lint;
pub mod security;
pub mod tests;

/// A report that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{report}: {message}")]
pub struct ParseError {
    /// Which report.
    pub report: &'static str,
    /// What was wrong.
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(report: &'static str, message: impl ToString) -> Self {
        ParseError {
            report,
            message: message.to_string(),
        }
    }
}

/// Parses a JSON document of `report`.
pub(crate) fn json(report: &'static str, bytes: &[u8]) -> Result<serde_json::Value, ParseError> {
    serde_json::from_slice(bytes).map_err(|e| ParseError::new(report, e))
}

/// Parses JSON lines, skipping lines that are not JSON objects (a test binary's own output
/// interleaved on stdout).
pub(crate) fn json_lines(bytes: &[u8]) -> impl Iterator<Item = serde_json::Value> + '_ {
    bytes.split(|b| *b == b'\n').filter_map(|line| {
        let line = line.trim_ascii();
        if line.first() != Some(&b'{') {
            return None;
        }
        serde_json::from_slice::<serde_json::Value>(line).ok()
    })
}

/// A string field, or "".
pub(crate) fn s<'a>(v: &'a serde_json::Value, key: &str) -> &'a str {
    v.get(key).and_then(|x| x.as_str()).unwrap_or("")
}

/// A positive integer field as a line number.
pub(crate) fn line(v: Option<&serde_json::Value>) -> Option<u32> {
    v.and_then(|x| x.as_u64())
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n > 0)
}

/// Path to a captured report under `testdata/`.
#[cfg(test)]
pub(crate) fn testdata(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
