//! The bounded cursor every decoder reads with: big-endian integers and
//! length-prefixed strings taken from one message, each read checked against the
//! message's end, so a truncated message is an error naming its kind, never a panic.

use super::LinkError;

/// A bounds-checked big-endian cursor over one message.
pub(super) struct Reader<'a> {
    msg: &'a [u8],
    /// Bytes read so far (the first one is the kind).
    pub(super) at: usize,
    /// The message's kind, named in every error.
    pub(super) kind: u8,
}

impl<'a> Reader<'a> {
    /// A cursor at `at` in `msg`, a message of kind `kind`.
    pub(super) fn new(msg: &'a [u8], at: usize, kind: u8) -> Self {
        Reader { msg, at, kind }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], LinkError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.msg.len());
        let Some(end) = end else {
            return Err(LinkError::Truncated {
                kind: self.kind,
                len: self.msg.len(),
            });
        };
        let s = &self.msg[self.at..end];
        self.at = end;
        Ok(s)
    }

    pub(super) fn u8(&mut self) -> Result<u8, LinkError> {
        Ok(self.take(1)?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, LinkError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    pub(super) fn u32(&mut self) -> Result<u32, LinkError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub(super) fn u64(&mut self) -> Result<u64, LinkError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    /// A `len u16 · UTF-8` string.
    pub(super) fn str16(&mut self, field: &'static str) -> Result<&'a str, LinkError> {
        let n = self.u16()? as usize;
        let s = self.take(n)?;
        simdutf8::basic::from_utf8(s).map_err(|_| LinkError::NotUtf8 {
            kind: self.kind,
            field,
        })
    }

    /// Everything left (a payload).
    pub(super) fn rest(&mut self) -> &'a [u8] {
        let s = &self.msg[self.at..];
        self.at = self.msg.len();
        s
    }

    /// Fixed-layout messages must not carry trailing bytes.
    pub(super) fn end(&self) -> Result<(), LinkError> {
        if self.at == self.msg.len() {
            Ok(())
        } else {
            Err(LinkError::TooLong {
                kind: self.kind,
                field: "message",
                len: self.msg.len(),
            })
        }
    }
}
