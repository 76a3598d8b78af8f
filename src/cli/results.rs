//! `drover results` and `drover submit --follow`: finished jobs' records, one line each, as
//! they are recorded. With `--json` a line is the record's JSON (`"result"` when the result is
//! UTF-8, `"result_base64"` when not); without, a line for people.

use super::{render, text};
use crate::client::Client;
use crate::job::BatchId;
use crate::status::Completion;
use futures::StreamExt;
use std::io::Write;
use std::time::Duration;

/// Records asked for per page when reading what is recorded now.
const PAGE: u32 = 1_000;

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// One JSON object per line.
    Json,
    /// Columns for people, under a header printed before the first record.
    Text,
}

impl Format {
    pub(super) fn of(json: bool) -> Format {
        if json {
            Format::Json
        } else {
            Format::Text
        }
    }
}

/// Prints records one line each, flushed as each is written (a pipe sees them as jobs end).
pub(super) struct Printer {
    format: Format,
    headed: bool,
}

impl Printer {
    pub(super) fn new(format: Format) -> Printer {
        Printer {
            format,
            headed: false,
        }
    }

    pub(super) fn print(&mut self, record: &Completion) -> anyhow::Result<()> {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        match self.format {
            Format::Json => {
                serde_json::to_writer(&mut out, record)?;
                out.write_all(b"\n")?;
            }
            Format::Text => {
                if !self.headed {
                    self.headed = true;
                    writeln!(out, "{}", header())?;
                }
                writeln!(out, "{}", line(record))?;
            }
        }
        out.flush()?;
        Ok(())
    }
}

/// `drover results`: the records after `after` (of one batch, or every batch's), then, with
/// `follow`, each as it is recorded, until the batch is done (never, for every batch).
pub(super) async fn run(
    client: &mut Client,
    batch: Option<BatchId>,
    after: u64,
    follow: bool,
    format: Format,
) -> anyhow::Result<()> {
    let mut printer = Printer::new(format);
    if follow {
        return follow_records(client, batch, after, &mut printer).await;
    }
    let mut cursor = after;
    loop {
        let page = client.results(batch, cursor, PAGE, Duration::ZERO).await?;
        for record in &page.results {
            printer.print(record)?;
        }
        if page.results.is_empty() || page.done {
            return Ok(());
        }
        cursor = page.cursor;
    }
}

/// Prints each record as it is recorded, until the batch followed is done.
pub(super) async fn follow_records(
    client: &mut Client,
    batch: Option<BatchId>,
    after: u64,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let records = client.follow(batch, after);
    let mut records = std::pin::pin!(records);
    while let Some(record) = records.next().await {
        printer.print(&record?)?;
    }
    Ok(())
}

fn header() -> String {
    format!(
        "{:>8}  {:>8}  {:>6}  {:<9}  {:>4}  {:<12}  {:>9}  {:<16}  RESULT",
        "CURSOR", "JOB", "BATCH", "STATE", "EXIT", "WORKER", "DURATION", "NAME"
    )
}

/// A record as a line for people: its text made safe to show, its result's start (or why it
/// failed, when it has no result).
fn line(completion: &Completion) -> String {
    let record = &completion.record;
    let shown = match (&completion.result, &record.error) {
        (Some(bytes), _) if !bytes.is_empty() => shown_result(bytes),
        (_, Some(error)) => format!("error: {}", text::line(error)),
        _ => "-".to_string(),
    };
    format!(
        "{:>8}  {:>8}  {:>6}  {:<9}  {:>4}  {:<12}  {:>9}  {:<16}  {}",
        record.cursor,
        record.id,
        record.batch,
        record.state.to_string(),
        record
            .exit_code
            .map_or_else(|| "-".to_string(), |code| code.to_string()),
        record
            .worker
            .as_deref()
            .map_or_else(|| "-".to_string(), text::cell),
        record
            .duration_ms
            .map_or_else(|| "-".to_string(), render::duration_ms),
        record
            .name
            .as_deref()
            .map_or_else(|| "-".to_string(), text::cell),
        shown,
    )
}

/// A result as a line shows it: its text on one line, clipped (as a table's cell), or its
/// size when it is bytes.
fn shown_result(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(shown) => text::cell(shown.trim_end_matches('\n')),
        Err(_) => format!("({} bytes, not UTF-8: --json shows them)", bytes.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobState;
    use crate::status::{Finished, Resulted};

    fn record(result: Option<&[u8]>, error: Option<&str>) -> Completion {
        Resulted {
            record: Finished {
                cursor: 12,
                id: 40,
                batch: 3,
                name: Some("resize\u{1b}[2J".into()),
                state: if error.is_some() {
                    JobState::Failed
                } else {
                    JobState::Succeeded
                },
                exit_code: Some(if error.is_some() { 2 } else { 0 }),
                worker: Some("w1".into()),
                duration_ms: Some(1500),
                finished_at_ms: 0,
                error: error.map(str::to_string),
            },
            result: result.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn a_line_shows_the_result_or_why_there_is_none_and_obeys_no_escape() {
        let shown = line(&record(Some(b"{\"size\": 3}\n"), None));
        assert!(shown.ends_with("{\"size\": 3}"), "{shown}");
        assert!(
            shown.contains("succeeded") && shown.contains("w1"),
            "{shown}"
        );
        assert!(!shown.contains('\u{1b}'), "{shown}");
        let failed = line(&record(None, Some("exited with code 2")));
        assert!(failed.ends_with("error: exited with code 2"), "{failed}");
        let binary = line(&record(Some(&[0xff, 0, 1]), None));
        assert!(binary.ends_with("(3 bytes, not UTF-8: --json shows them)"));
        let long = line(&record(Some("x".repeat(500).as_bytes()), None));
        assert!(long.ends_with('…') && long.len() < 200, "{long}");
        // The columns line up under the header.
        assert_eq!(header().find("STATE"), shown.find("succeeded"));
    }
}
