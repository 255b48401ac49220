//! Build output: plain timestamped lines on stderr (and in `--logfile`),
//! shared by pid 1 and the threads that read hook output.

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
}

impl Log {
    pub fn new(logfile: Option<&Path>) -> Result<Log> {
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
        Ok(Log { file })
    }

    /// One line, prefixed with the UTC time of day.
    pub fn line(&self, text: &str) {
        let line = format!("{} | {text}\n", timestamp(SystemTime::now()));
        // Losing a log line must not stop a build; stderr going away (a closed
        // terminal) is reported by the build's own failure, if any.
        let _ = std::io::stderr().write_all(line.as_bytes());
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
