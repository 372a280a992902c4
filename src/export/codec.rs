//! The compact binary encoding of spilled records: fixed-width little-endian integers and
//! length-prefixed strings, written and read in field order by each [`super::spill::SpillItem`].
//!
//! Export used to spill its records as JSON, which escaped every prompt and answer on the way
//! out and unescaped it again on the way back, several times per record; this encoding copies
//! bytes. It is private to one export run (spill files never outlive it), so it carries no
//! version or field names.

/// Appends fields to a frame.
pub(crate) struct Enc<'a>(pub &'a mut Vec<u8>);

impl Enc<'_> {
    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub(crate) fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(v as u8)
    }
    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn u128(&mut self, v: u128) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub(crate) fn f64(&mut self, v: f64) -> &mut Self {
        self.u64(v.to_bits())
    }
    /// A `u32` length, then the bytes. Spill frames are themselves limited to 4 GiB.
    pub(crate) fn str(&mut self, v: &str) -> &mut Self {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v.as_bytes());
        self
    }
    /// Raw bytes, no length (the reader knows how many).
    pub(crate) fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    pub(crate) fn opt_str(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(s) => self.u8(1).str(s),
        }
    }
    pub(crate) fn opt_u64(&mut self, v: Option<u64>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(x) => self.u8(1).u64(x),
        }
    }
    pub(crate) fn opt_bool(&mut self, v: Option<bool>) -> &mut Self {
        self.u8(match v {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        })
    }
}

/// Reads fields back in the order they were written; every read checks the length.
pub(crate) struct Dec<'a> {
    buf: &'a [u8],
}

impl<'a> Dec<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Dec { buf }
    }
    fn take<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or("truncated spill frame")?;
        self.buf = rest;
        Ok(*head)
    }
    /// `n` raw bytes ([`Enc::bytes`]).
    pub(crate) fn take_bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err("truncated frame".into());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take::<1>()?[0])
    }
    pub(crate) fn bool(&mut self) -> Result<bool, String> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(format!("bad bool {b} in spill frame")),
        }
    }
    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take()?))
    }
    pub(crate) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take()?))
    }
    pub(crate) fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_le_bytes(self.take()?))
    }
    pub(crate) fn u128(&mut self) -> Result<u128, String> {
        Ok(u128::from_le_bytes(self.take()?))
    }
    pub(crate) fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_bits(self.u64()?))
    }
    pub(crate) fn str(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        if self.buf.len() < n {
            return Err("truncated string in spill frame".into());
        }
        let (s, rest) = self.buf.split_at(n);
        self.buf = rest;
        String::from_utf8(s.to_vec()).map_err(|e| e.to_string())
    }
    /// Skips a string written by [`Enc::str`].
    pub(crate) fn skip_str(&mut self) -> Result<(), String> {
        let n = self.u32()? as usize;
        self.take_bytes(n).map(drop)
    }
    pub(crate) fn opt_str(&mut self) -> Result<Option<String>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.str().map(Some),
            t => Err(format!("bad option tag {t} in spill frame")),
        }
    }
    pub(crate) fn opt_u64(&mut self) -> Result<Option<u64>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.u64().map(Some),
            t => Err(format!("bad option tag {t} in spill frame")),
        }
    }
    pub(crate) fn opt_bool(&mut self) -> Result<Option<bool>, String> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(false)),
            2 => Ok(Some(true)),
            t => Err(format!("bad option tag {t} in spill frame")),
        }
    }
    /// Checks that the whole frame was read: a frame of another type would fail here.
    pub(crate) fn end(&self) -> Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!("{} stray bytes after spill frame", self.buf.len()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn export_codec_round_trips(
            a in proptest::num::u8::ANY,
            b in proptest::num::u64::ANY,
            c in proptest::num::i64::ANY,
            d in proptest::num::f64::ANY,
            e in ".{0,40}",
            f in proptest::option::of(".{0,10}"),
            g in proptest::option::of(proptest::bool::ANY),
            h in proptest::num::u128::ANY,
        ) {
            let mut buf = Vec::new();
            Enc(&mut buf).u8(a).u64(b).i64(c).f64(d).str(&e).opt_str(f.as_deref()).opt_bool(g).u128(h).bool(true).u32(7);
            let mut r = Dec::new(&buf);
            proptest::prop_assert_eq!(r.u8().unwrap(), a);
            proptest::prop_assert_eq!(r.u64().unwrap(), b);
            proptest::prop_assert_eq!(r.i64().unwrap(), c);
            proptest::prop_assert_eq!(r.f64().unwrap().to_bits(), d.to_bits());
            proptest::prop_assert_eq!(r.str().unwrap(), e);
            proptest::prop_assert_eq!(r.opt_str().unwrap(), f);
            proptest::prop_assert_eq!(r.opt_bool().unwrap(), g);
            proptest::prop_assert_eq!(r.u128().unwrap(), h);
            proptest::prop_assert!(r.bool().unwrap());
            proptest::prop_assert_eq!(r.u32().unwrap(), 7);
            proptest::prop_assert!(r.end().is_ok());
            // Every truncation is an error, never a panic or a wrong value read as right.
            for cut in 0..buf.len() {
                let mut r = Dec::new(&buf[..cut]);
                let whole = (|| -> Result<(), String> {
                    r.u8()?; r.u64()?; r.i64()?; r.f64()?; r.str()?; r.opt_str()?;
                    r.opt_bool()?; r.u128()?; r.bool()?; r.u32()?; Ok(())
                })();
                proptest::prop_assert!(whole.is_err());
            }
        }
    }
}
