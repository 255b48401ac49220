//! Build output, shared by pid 1 and the threads that read hook output:
//! timestamped lines on stderr (and in `--logfile`), and on a terminal a
//! status line below them naming the phase and script running and for how
//! long. Interactive break shells suspend the status line.

use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};

const SECONDS_PER_DAY: u64 = 86_400;

#[derive(Debug, Default)]
pub struct Log {
    file: Option<Mutex<File>>,
    status: Option<indicatif::ProgressBar>,
}

/// How often the status line's clock ticks.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

impl Log {
    /// `status_line`: draw the status line (stderr is a terminal and the
    /// user did not ask for quiet output).
    pub fn new(logfile: Option<&Path>, status_line: bool) -> Result<Log> {
        let file = match logfile {
            Some(p) => Some(Mutex::new(
                File::options()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("opening the log file {p:?}"))?,
            )),
            None => None,
        };
        let status = status_line.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(TICK);
            bar
        });
        Ok(Log { file, status })
    }

    /// What the status line shows (the phase and script running).
    pub fn status(&self, msg: String) {
        if let Some(bar) = &self.status {
            bar.set_message(msg);
        }
    }

    /// Run `f` (an interactive shell) with the status line out of the way.
    pub fn suspend<T>(&self, f: impl FnOnce() -> T) -> T {
        match &self.status {
            Some(bar) => bar.suspend(f),
            None => f(),
        }
    }

    /// Remove the status line for good.
    pub fn finish(&self) {
        if let Some(bar) = &self.status {
            bar.finish_and_clear();
        }
    }

    /// One line, prefixed with the UTC time of day.
    pub fn line(&self, text: &str) {
        let line = format!("{} | {text}\n", timestamp(SystemTime::now()));
        // Losing a log line must not stop a build; stderr going away (a closed
        // terminal) is reported by the build's own failure, if any.
        // The line is written by us, with the status line cleared around it,
        // so it is never lost to how a terminal reports its size.
        self.suspend(|| {
            let _ = std::io::stderr().write_all(line.as_bytes());
        });
        if let Some(f) = &self.file {
            if let Ok(mut f) = f.lock() {
                let _ = f.write_all(line.as_bytes());
            }
        }
    }
}

impl Log {
    /// A line for the log file only (what stderr gets in another form).
    pub fn to_file(&self, text: &str) {
        if let Some(f) = &self.file {
            if let Ok(mut f) = f.lock() {
                let _ = writeln!(f, "{} | {text}", timestamp(SystemTime::now()));
            }
        }
    }
}

/// `HH:MM:SS.mmm` in UTC.
pub fn timestamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let s = d.as_secs() % SECONDS_PER_DAY;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps() {
        let t = UNIX_EPOCH + Duration::from_millis(((3 * 24 + 13) * 3600 + 5 * 60 + 9) * 1000 + 42);
        assert_eq!(timestamp(t), "13:05:09.042");
    }
}
