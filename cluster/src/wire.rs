//! The bounds-checked big-endian reader both of the crate's codecs (`proto`'s cluster bus
//! and `repl`'s replication messages) decode with. Generic over the codec's error type:
//! every short read becomes that codec's `Truncated` error, naming the field and offset.

use std::marker::PhantomData;

/// A read that ran past the end of the input.
pub(crate) struct Truncated {
    pub(crate) field: &'static str,
    pub(crate) offset: usize,
    pub(crate) needed: usize,
    pub(crate) available: usize,
}

/// Reads fields front to back; `pos` is the offset of the next unread byte.
pub(crate) struct Reader<'a, E> {
    pub(crate) buf: &'a [u8],
    pub(crate) pos: usize,
    _error: PhantomData<fn() -> E>,
}

impl<'a, E: From<Truncated>> Reader<'a, E> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader {
            buf,
            pos: 0,
            _error: PhantomData,
        }
    }

    pub(crate) fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], E> {
        let available = self.buf.len() - self.pos;
        if available < n {
            return Err(Truncated {
                field,
                offset: self.pos,
                needed: n,
                available,
            }
            .into());
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, E> {
        Ok(self.take(1, field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, E> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, E> {
        let b = self.take(4, field)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, E> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}
