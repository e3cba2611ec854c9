//! Log setup for the binary: `tracing` to stderr as text or JSON, the level from `RUST_LOG` or
//! the Python image's `LOGLEVEL`.
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the session span's fields.
    Json,
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// `LOGLEVEL` is not a Python level name or number.
    #[error(
        "LOGLEVEL {0:?} is not a Python level (CRITICAL, ERROR, WARNING, INFO, DEBUG, NOTSET or a number)"
    )]
    UnknownLevel(String),
    /// `RUST_LOG` is not a valid filter.
    #[error("RUST_LOG is not a valid filter")]
    InvalidRustLog(#[source] tracing_subscriber::filter::FromEnvError),
    /// A global subscriber was already installed.
    #[error("logging was already initialised")]
    AlreadyInitialised,
}

/// The `tracing` level of a Python logging level name (`CRITICAL`, `FATAL`, `ERROR`, `WARNING`,
/// `WARN`, `INFO`, `DEBUG`, `NOTSET`; any case) or number (`10`, `20`, …). `TRACE` is accepted too.
pub fn python_level(level: &str) -> Result<LevelFilter, LoggingError> {
    let level = level.trim();
    let from_number = |number: u32| match number {
        40.. => LevelFilter::ERROR,
        30..=39 => LevelFilter::WARN,
        20..=29 => LevelFilter::INFO,
        10..=19 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    if let Ok(number) = level.parse::<u32>() {
        return Ok(from_number(number));
    }
    match level.to_ascii_uppercase().as_str() {
        "CRITICAL" | "FATAL" | "ERROR" => Ok(LevelFilter::ERROR),
        "WARNING" | "WARN" => Ok(LevelFilter::WARN),
        "INFO" => Ok(LevelFilter::INFO),
        "DEBUG" => Ok(LevelFilter::DEBUG),
        "NOTSET" | "TRACE" => Ok(LevelFilter::TRACE),
        _ => Err(LoggingError::UnknownLevel(level.to_owned())),
    }
}

/// The filter: `RUST_LOG` when set and not empty (it is the more specific setting), else
/// `loglevel` read as a Python level.
pub fn log_filter(loglevel: &str) -> Result<EnvFilter, LoggingError> {
    match std::env::var("RUST_LOG") {
        Ok(rust_log) if !rust_log.trim().is_empty() => EnvFilter::builder()
            .from_env()
            .map_err(LoggingError::InvalidRustLog),
        _ => Ok(EnvFilter::default().add_directive(python_level(loglevel)?.into())),
    }
}

/// Installs the global subscriber writing to stderr.
pub fn init_logging(format: LogFormat, loglevel: &str) -> Result<(), LoggingError> {
    use std::io::IsTerminal as _;

    let filter = log_filter(loglevel)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    installed.map_err(|_| LoggingError::AlreadyInitialised)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_level_names_and_numbers_map_to_tracing_levels() {
        for (python, expected) in [
            ("CRITICAL", LevelFilter::ERROR),
            ("error", LevelFilter::ERROR),
            ("WARNING", LevelFilter::WARN),
            ("Info", LevelFilter::INFO),
            ("DEBUG", LevelFilter::DEBUG),
            ("NOTSET", LevelFilter::TRACE),
            ("10", LevelFilter::DEBUG),
            ("25", LevelFilter::INFO),
            ("50", LevelFilter::ERROR),
        ] {
            assert_eq!(python_level(python).unwrap(), expected, "{python}");
        }
        assert!(matches!(
            python_level("LOUD"),
            Err(LoggingError::UnknownLevel(_))
        ));
    }
}
