//! Parsers of the tools' machine-readable reports into the common result shapes. Each takes
//! the report's bytes and the project root (to make paths workspace-relative).

pub mod lint;
#[cfg(test)]
mod proptests;
pub mod security;
pub mod tests;

use crate::result::{Finding, Findings, Severity};

/// Largest report parsed, in bytes: a bigger one is refused (the code under test can write it).
pub const MAX_REPORT_BYTES: usize = 16 << 20;
/// Most XML nodes parsed from one JUnit report.
pub const MAX_XML_NODES: u32 = 1_000_000;
/// Most records (JSON lines, events, profile lines) read from one report.
pub const MAX_RECORDS: usize = 500_000;
/// Deepest nesting of node's tests accepted.
pub const MAX_NESTING: u64 = 256;
/// Most findings kept per report (the most severe first); the rest are counted in one
/// `kiln`/`findings-omitted` finding of severity `info`.
pub const MAX_FINDINGS: usize = 2_000;
/// Longest file, rule or tool text kept in a finding, in bytes.
pub const MAX_FIELD_BYTES: usize = 512;
/// Longest message kept, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 2048;

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

/// Refuses a report over [`MAX_REPORT_BYTES`].
pub(crate) fn sized<'a>(report: &'static str, bytes: &'a [u8]) -> Result<&'a [u8], ParseError> {
    if bytes.len() > MAX_REPORT_BYTES {
        return Err(ParseError::new(
            report,
            format!("{} bytes is over the {MAX_REPORT_BYTES} byte limit", bytes.len()),
        ));
    }
    Ok(bytes)
}

/// Parses a JSON document of `report` (serde_json stops at 128 levels of nesting).
pub(crate) fn json(report: &'static str, bytes: &[u8]) -> Result<serde_json::Value, ParseError> {
    serde_json::from_slice(sized(report, bytes)?).map_err(|e| ParseError::new(report, e))
}

/// Parses JSON lines, skipping lines that are not JSON objects (a test binary's own output
/// interleaved on stdout). Refuses a report over the size limit or with more than
/// [`MAX_RECORDS`] objects.
pub(crate) fn json_lines(report: &'static str, bytes: &[u8]) -> Result<Vec<serde_json::Value>, ParseError> {
    let mut out = Vec::new();
    for line in sized(report, bytes)?.split(|b| *b == b'\n') {
        let line = line.trim_ascii();
        if line.first() != Some(&b'{') {
            continue;
        }
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) {
            if out.len() == MAX_RECORDS {
                return Err(too_many(report));
            }
            out.push(v);
        }
    }
    Ok(out)
}

/// The error of a report with more than [`MAX_RECORDS`] records.
pub(crate) fn too_many(report: &'static str) -> ParseError {
    ParseError::new(report, format!("more than {MAX_RECORDS} records"))
}

/// `text` cut to at most `max` bytes, on a character boundary, marked with `…` when cut.
pub(crate) fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Collects findings with every text clipped and at most [`MAX_FINDINGS`] kept, the most
/// severe first, so a flood of minor findings can neither exhaust memory nor hide a serious one.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    kept: Vec<Finding>,
    omitted: u64,
}

impl Collector {
    /// Adds a finding.
    pub(crate) fn add(&mut self, f: Finding) {
        self.kept.push(Finding {
            tool: clip(&f.tool, MAX_FIELD_BYTES),
            rule: clip(&f.rule, MAX_FIELD_BYTES),
            severity: f.severity,
            file: clip(&f.file, MAX_FIELD_BYTES),
            line: f.line,
            message: clip(&f.message, MAX_MESSAGE_BYTES),
            in_test: f.in_test,
        });
        if self.kept.len() >= 2 * MAX_FINDINGS {
            self.compact();
        }
    }

    /// Keeps the [`MAX_FINDINGS`] most severe (the first seen among equals).
    fn compact(&mut self) {
        if self.kept.len() <= MAX_FINDINGS {
            return;
        }
        self.kept.sort_by_key(|f| std::cmp::Reverse(f.severity));
        self.omitted += (self.kept.len() - MAX_FINDINGS) as u64;
        self.kept.truncate(MAX_FINDINGS);
    }

    /// The findings, sorted, with one `info` finding counting those not kept.
    pub(crate) fn finish(mut self, tool: &str) -> Findings {
        self.compact();
        let mut out = Findings { findings: self.kept };
        if self.omitted > 0 {
            out.findings.push(Finding {
                tool: tool.to_string(),
                rule: "kiln.findings-omitted".into(),
                severity: Severity::Info,
                file: String::new(),
                line: None,
                message: format!(
                    "{} more findings not kept (at most {MAX_FINDINGS} per report, the most severe first)",
                    self.omitted
                ),
                in_test: false,
            });
        }
        out.sort();
        out
    }
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
