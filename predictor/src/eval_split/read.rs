//! Reading the split's files, each bounded before it is held in memory.

use std::fs::File;
use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

use hone_crds::contract::{EVAL_HEADER_FILE, EvalSplitHeader};

use super::{EVAL_MAX_HEADER_BYTES, EVAL_MAX_LINE_BYTES, EvalError};

/// Reads and parses `split.json`.
pub fn read_header(dir: &Path) -> Result<EvalSplitHeader, EvalError> {
    let path = dir.join(EVAL_HEADER_FILE);
    let bytes = read_bounded(&path, EVAL_MAX_HEADER_BYTES)?;
    serde_json::from_slice(&bytes).map_err(|e| EvalError::Header { path, reason: e.to_string() })
}

/// Reads a whole file, refusing one over `limit` bytes without reading it all.
pub(super) fn read_bounded(path: &Path, limit: usize) -> Result<Vec<u8>, EvalError> {
    let read_error = |source| EvalError::Read { path: path.to_owned(), source };
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(read_error)?
        .take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() > limit {
        return Err(EvalError::TooLarge { path: path.to_owned(), limit });
    }
    Ok(bytes)
}

/// Lines of a file, each at most [`EVAL_MAX_LINE_BYTES`], read without
/// holding a longer one in memory.
pub(super) struct BoundedLines<R> {
    reader: R,
    path: PathBuf,
    line: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> BoundedLines<R> {
    /// Lines of `reader`, which reads `path` (named in errors).
    pub(super) fn new(reader: R, path: PathBuf) -> Self {
        Self { reader, path, line: 0, buf: Vec::new() }
    }

    /// The next line (1-based number, text without the line break), or `None` at the end.
    pub(super) fn next_line(&mut self) -> Result<Option<(usize, &[u8])>, EvalError> {
        self.buf.clear();
        self.line += 1;
        let limit = EVAL_MAX_LINE_BYTES;
        // One byte for the newline, one more to notice a line that is too long.
        let read = (&mut self.reader)
            .take(limit as u64 + 2)
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| EvalError::Read { path: self.path.clone(), source })?;
        if read == 0 {
            return Ok(None);
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        if self.buf.len() > limit {
            return Err(EvalError::LineTooLong { path: self.path.clone(), line: self.line, limit });
        }
        Ok(Some((self.line, &self.buf)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &[u8]) -> BoundedLines<&[u8]> {
        BoundedLines::new(text, PathBuf::from("samples.jsonl"))
    }

    #[test]
    fn lines_are_numbered_and_stripped() {
        let mut reader = lines(b"a\r\n\nbc");
        assert_eq!(reader.next_line().unwrap(), Some((1, &b"a"[..])));
        assert_eq!(reader.next_line().unwrap(), Some((2, &b""[..])));
        assert_eq!(reader.next_line().unwrap(), Some((3, &b"bc"[..])));
        assert_eq!(reader.next_line().unwrap(), None);
    }

    #[test]
    fn a_line_over_the_limit_is_refused_and_one_at_it_is_not() {
        let mut at_limit = vec![b'x'; EVAL_MAX_LINE_BYTES];
        at_limit.push(b'\n');
        assert_eq!(lines(&at_limit).next_line().unwrap().map(|(_, l)| l.len()), Some(EVAL_MAX_LINE_BYTES));
        let over = vec![b'x'; EVAL_MAX_LINE_BYTES + 1];
        let err = lines(&over).next_line().unwrap_err();
        assert!(matches!(err, EvalError::LineTooLong { line: 1, .. }), "{err}");
    }
}
