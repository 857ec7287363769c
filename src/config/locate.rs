//! Turns a byte span of the config text into a `FILE:LINE:COLUMN: KEY`
//! error, so an operator can go straight to the problem.

use std::ops::Range;
use std::path::Path;

use super::ConfigError;

/// Turns byte spans into `file:line:column: key` errors.
pub(super) struct Locator<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
}

impl Locator<'_> {
    pub(super) fn error(
        &self,
        span: Range<usize>,
        key: Option<&str>,
        message: String,
    ) -> ConfigError {
        let start = span.start.min(self.text.len());
        let before = self.text.get(..start).unwrap_or_default();
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
        let key = match key {
            Some(key) => key.to_owned(),
            None => self.key_on_line(line_start),
        };
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            column,
            key,
            message,
        }
    }

    /// The key written on the line starting at `line_start`, or the table header.
    fn key_on_line(&self, line_start: usize) -> String {
        let line = self
            .text
            .get(line_start..)
            .and_then(|rest| rest.lines().next())
            .unwrap_or_default()
            .trim();
        match line.split_once('=') {
            Some((key, _)) => key.trim().to_owned(),
            None if line.is_empty() => "(document)".to_owned(),
            None => line.to_owned(),
        }
    }
}
