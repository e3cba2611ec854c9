//! The incremental reading both parsers share: collect a fixed number of bytes across chunks,
//! or skip a number of bytes without keeping them.

use crate::RfbError;

/// Collects up to `want` bytes across calls; what a parser needs to see of a message.
#[derive(Debug, Default)]
pub(crate) struct Collect {
    buffer: Vec<u8>,
}

impl Collect {
    /// Takes bytes from the front of `input` until `want` are collected, and returns them then
    /// (the next call starts afresh); `None` while more are needed (`input` is then empty).
    pub(crate) fn take(&mut self, input: &mut &[u8], want: usize) -> Option<Vec<u8>> {
        let missing = want.saturating_sub(self.buffer.len());
        let (now, rest) = input.split_at(missing.min(input.len()));
        self.buffer.extend_from_slice(now);
        *input = rest;
        (self.buffer.len() >= want).then(|| std::mem::take(&mut self.buffer))
    }
}

/// Consumes `remaining` bytes from `input`, at most what it holds; whether all are consumed.
pub(crate) fn skip(input: &mut &[u8], remaining: &mut u64) -> bool {
    let now = usize::try_from(*remaining)
        .unwrap_or(usize::MAX)
        .min(input.len());
    *input = &input[now..];
    *remaining -= now as u64;
    *remaining == 0
}

/// Appends `bytes` to what `buffer` kept and hands the unread rest to `step` until it needs
/// more (returns 0) or fails; what `step` consumed is dropped, the rest kept for the next call.
pub(crate) fn consume(
    buffer: &mut Vec<u8>,
    bytes: &[u8],
    mut step: impl FnMut(&[u8]) -> Result<usize, RfbError>,
) -> Result<(), RfbError> {
    let mut input = std::mem::take(buffer);
    input.extend_from_slice(bytes);
    let mut at = 0;
    let result = loop {
        match step(&input[at..]) {
            Ok(0) => break Ok(()),
            Ok(used) => at += used,
            Err(error) => break Err(error),
        }
    };
    input.drain(..at);
    *buffer = input;
    result
}

pub(crate) fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([bytes[at], bytes[at + 1]])
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

pub(crate) fn i32_at(bytes: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collect_spans_chunks() {
        let mut collect = Collect::default();
        let mut first: &[u8] = b"RFB ";
        assert_eq!(collect.take(&mut first, 6), None);
        assert!(first.is_empty());
        let mut second: &[u8] = b"00xyz";
        assert_eq!(
            collect.take(&mut second, 6).as_deref(),
            Some(&b"RFB 00"[..])
        );
        assert_eq!(second, b"xyz");
    }

    #[test]
    fn skip_stops_at_the_count() {
        let mut remaining = 5;
        let mut input: &[u8] = b"abc";
        assert!(!skip(&mut input, &mut remaining));
        let mut input: &[u8] = b"defgh";
        assert!(skip(&mut input, &mut remaining));
        assert_eq!(input, b"fgh");
    }
}
