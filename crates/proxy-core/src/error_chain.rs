//! [`ErrorChain`]: an error and all its sources on one line, for log records and messages.
use std::error::Error;
use std::fmt;

/// Displays an error followed by each of its sources, separated by `": "`.
///
/// ```
/// use proxy_core::ErrorChain;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("cannot open the console")]
/// struct Outer(#[source] std::io::Error);
///
/// let error = Outer(std::io::Error::other("connection refused"));
/// assert_eq!(
///     ErrorChain(&error).to_string(),
///     "cannot open the console: connection refused"
/// );
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
