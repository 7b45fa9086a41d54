//! A progress display for long operator commands: a line redrawn in place on a terminal, a
//! line every few seconds otherwise (logs of a Kubernetes Job).
#![allow(clippy::print_stderr)] // an operator's progress display is the point

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Progress of `done` out of `total` units.
pub struct Progress {
    what: &'static str,
    total: u64,
    started: Instant,
    last_shown: Option<Instant>,
    terminal: bool,
}

impl Progress {
    /// Starts counting `what` (e.g. "events") towards `total`.
    pub fn new(what: &'static str, total: u64) -> Self {
        Self {
            what,
            total,
            started: Instant::now(),
            last_shown: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Reports `done` so far (shown at most every 200 ms on a terminal, 5 s otherwise).
    pub fn update(&mut self, done: u64) {
        let every = if self.terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(5)
        };
        if self.last_shown.is_some_and(|at| at.elapsed() < every) {
            return;
        }
        self.last_shown = Some(Instant::now());
        let line = self.line(done);
        if self.terminal {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }

    /// Shows the final state.
    pub fn finish(&mut self, done: u64) {
        let line = self.line(done);
        if self.terminal {
            eprintln!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }

    /// `12,000/50,000 events (24%), 1,000/s, ETA 38s`
    pub fn line(&self, done: u64) -> String {
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / elapsed;
        let percent = (done * 100).checked_div(self.total).unwrap_or(100);
        let eta = if rate > 0.0 && done < self.total {
            format!(
                ", ETA {}s",
                ((self.total - done) as f64 / rate).ceil() as u64
            )
        } else {
            String::new()
        };
        format!(
            "{}/{} {} ({percent}%), {}/s{eta}",
            thousands(done),
            thousands(self.total),
            self.what,
            thousands(rate as u64)
        )
    }
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
