//! Progress of a long wait: rows settling after a reload, bindings taken back at shutdown.
//!
//! On a terminal an indicatif bar on stderr is redrawn in place. Anywhere else (a pipe, a file,
//! a CI log) indicatif's target hides itself, and the figures go out as plain lines instead,
//! one each time they have changed after at least [`PLAIN_EVERY`]: a short wait leaves only its
//! final figures, a long one a few readable lines, and never a carriage return or an escape code.
//! The final figures are one plain line on stdout either way ([`Progress::finish`]).

use std::io::Write;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often, at most, a changing figure is repeated as a plain line.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// The bar: 40 cells of `#` and `.`, then the figures.
const TEMPLATE: &str = "[{bar:40}] {pos}/{len} {msg}";

pub struct Progress {
    bar: ProgressBar,
    /// Where the figures go when there is no bar to draw.
    plain: Option<PlainLines>,
    /// The last figures, for the final line.
    last: String,
}

struct PlainLines {
    out: Box<dyn Write>,
    every: Duration,
    /// When the last line was written (or the wait began), and what it said.
    written: (Instant, String),
}

impl Progress {
    /// A bar on stderr when stderr is a terminal; plain lines on stderr otherwise.
    pub fn on_stderr() -> Progress {
        let target = ProgressDrawTarget::stderr();
        if !target.is_hidden() {
            let bar = ProgressBar::with_draw_target(Some(0), target);
            // The template is a constant: it parses, and a bar without style would still draw.
            if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
                bar.set_style(style.progress_chars("#."));
            }
            Progress {
                bar,
                plain: None,
                last: String::new(),
            }
        } else {
            Progress::plain(Box::new(std::io::stderr()), PLAIN_EVERY)
        }
    }

    /// No bar: the figures as plain lines to `out`, changed ones at most every `every`.
    pub fn plain(out: Box<dyn Write>, every: Duration) -> Progress {
        Progress {
            bar: ProgressBar::hidden(),
            plain: Some(PlainLines {
                out,
                every,
                written: (Instant::now(), String::new()),
            }),
            last: String::new(),
        }
    }

    /// `done` of `total`, and what they are (`settled: 5 registered, …`).
    pub fn update(&mut self, done: u64, total: u64, what: &str) {
        self.bar.set_length(total);
        self.bar.set_position(done);
        self.bar.set_message(what.to_string());
        self.last = figures(done, total, what);
        if let Some(plain) = &mut self.plain {
            plain.offer(&self.last);
        }
    }

    /// Takes the bar away and writes the last figures to `out` as one line.
    pub fn finish(self, out: &mut dyn Write) -> std::io::Result<()> {
        self.bar.finish_and_clear();
        writeln!(out, "{}", self.last)
    }
}

impl PlainLines {
    fn offer(&mut self, line: &str) {
        let (at, said) = &self.written;
        if said != line && at.elapsed() >= self.every {
            // Progress is a courtesy: a closed stderr must not stop the command.
            let _ = writeln!(self.out, "{line}");
            let _ = self.out.flush();
            self.written = (Instant::now(), line.to_string());
        }
    }
}

fn figures(done: u64, total: u64, what: &str) -> String {
    format!("{done}/{total} {what}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test can read afterwards.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("not poisoned").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("not poisoned").clone()).expect("utf-8")
        }
    }

    #[test]
    fn plain_progress_is_whole_lines_without_carriage_returns() {
        let progress_out = Captured::default();
        let mut progress = Progress::plain(Box::new(progress_out.clone()), Duration::ZERO);
        for done in [0, 0, 3, 6] {
            progress.update(done, 6, "un-registered");
        }
        let mut summary = Vec::new();
        progress.finish(&mut summary).expect("written");

        let lines = progress_out.text();
        assert!(
            !lines.contains('\r') && !lines.contains('\x1b'),
            "{lines:?}"
        );
        // Unchanged figures are not repeated.
        assert_eq!(
            lines,
            "0/6 un-registered\n3/6 un-registered\n6/6 un-registered\n"
        );
        assert_eq!(
            String::from_utf8(summary).expect("utf-8"),
            "6/6 un-registered\n"
        );
    }

    #[test]
    fn plain_progress_is_rate_limited() {
        let progress_out = Captured::default();
        let mut progress =
            Progress::plain(Box::new(progress_out.clone()), Duration::from_secs(3600));
        for done in 0..=10 {
            progress.update(done, 10, "settled: 0 registered");
        }
        let mut summary = Vec::new();
        progress.finish(&mut summary).expect("written");
        // A wait shorter than the interval leaves only its final figures.
        assert_eq!(progress_out.text(), "");
        assert_eq!(
            String::from_utf8(summary).expect("utf-8"),
            "10/10 settled: 0 registered\n"
        );
    }
}
