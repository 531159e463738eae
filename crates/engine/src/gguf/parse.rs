//! Parses the GGUF header (metadata and tensor directory) out of a byte slice with bounds checks
//! on every read: a truncated or hostile file gives an `Error::Gguf`, never a panic, an
//! out-of-bounds read or a giant allocation. It does not interpret the metadata (see `config`).

use super::types::GgmlType;
use super::{TensorInfo, Value};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

const MAGIC: &[u8; 4] = b"GGUF";
/// No real model has tensors with more dimensions than this.
const MAX_DIMS: u32 = 4;
/// Nesting arrays inside arrays is legal but no model needs more than one level.
const MAX_ARRAY_DEPTH: u32 = 2;

/// The parsed header: metadata, tensor directory and where tensor data starts.
pub(crate) struct Header {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    /// Each metadata entry's key and byte range (key, type and value), in file order.
    pub kv_spans: Vec<(String, std::ops::Range<usize>)>,
    pub tensors: Vec<TensorInfo>,
    pub data_offset: usize,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| {
                Error::gguf(format!(
                    "file truncated while reading {what} at byte {} (needs {n} bytes, file has {})",
                    self.pos,
                    self.bytes.len()
                ))
            })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }
    /// A count that claims `count` items of at least `min_size` bytes each must fit in the file.
    fn count(&mut self, what: &str, min_size: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let fits = (n as u128) * (min_size.max(1) as u128) <= self.remaining() as u128;
        if !fits {
            return Err(Error::gguf(format!(
                "{what} = {n} cannot fit in the {} bytes left in the file",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(what, 1)?;
        let raw = self.take(n, what)?;
        // Vocabularies sometimes hold invalid UTF-8 pieces; keep them readable rather than fail.
        Ok(String::from_utf8_lossy(raw).into_owned())
    }
}

fn read_value(c: &mut Cursor, ty: u32, key: &str, depth: u32) -> Result<Value> {
    Ok(match ty {
        0 => Value::U8(c.array::<1>(key)?[0]),
        1 => Value::I8(c.array::<1>(key)?[0] as i8),
        2 => Value::U16(u16::from_le_bytes(c.array(key)?)),
        3 => Value::I16(i16::from_le_bytes(c.array(key)?)),
        4 => Value::U32(c.u32(key)?),
        5 => Value::I32(c.u32(key)? as i32),
        6 => Value::F32(f32::from_le_bytes(c.array(key)?)),
        7 => Value::Bool(c.array::<1>(key)?[0] != 0),
        8 => Value::Str(c.string(key)?),
        9 => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(Error::gguf(format!(
                    "metadata `{key}`: arrays nested too deep"
                )));
            }
            let elem_ty = c.u32(key)?;
            let min = match elem_ty {
                0 | 1 | 7 => 1,
                2 | 3 => 2,
                4..=6 => 4,
                8 | 10..=12 => 8,
                9 => 12,
                t => {
                    return Err(Error::gguf(format!(
                        "metadata `{key}`: unknown array element type {t}"
                    )))
                }
            };
            let n = c.count(key, min)?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(read_value(c, elem_ty, key, depth + 1)?);
            }
            Value::Array(items)
        }
        10 => Value::U64(c.u64(key)?),
        11 => Value::I64(c.u64(key)? as i64),
        12 => Value::F64(f64::from_le_bytes(c.array(key)?)),
        t => {
            return Err(Error::gguf(format!(
                "metadata `{key}`: unknown value type {t}"
            )))
        }
    })
}

fn read_tensor_info(c: &mut Cursor) -> Result<TensorInfo> {
    let name = c.string("tensor name")?;
    let n_dims = c.u32("tensor dimension count")?;
    if n_dims == 0 || n_dims > MAX_DIMS {
        return Err(Error::tensor(
            &name,
            format!("{n_dims} dimensions (expected 1..={MAX_DIMS})"),
        ));
    }
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(c.u64("tensor dimension")?);
    }
    let ty_id = c.u32("tensor type")?;
    let offset = c.u64("tensor offset")?;
    let ty = GgmlType::from_id(ty_id).map_err(|e| Error::tensor(&name, e.to_string()))?;
    let n_elems = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(usize::try_from(d).ok()?))
        .filter(|&n| n > 0)
        .ok_or_else(|| Error::tensor(&name, format!("bad shape {dims:?}")))?;
    if !(dims[0] as usize).is_multiple_of(ty.block_elems()) {
        return Err(Error::tensor(
            &name,
            format!(
                "row length {} is not a multiple of the {} block size {}",
                dims[0],
                ty.name(),
                ty.block_elems()
            ),
        ));
    }
    let n_bytes = ty
        .bytes_for(n_elems)
        .ok_or_else(|| Error::tensor(&name, "size overflows"))?;
    Ok(TensorInfo {
        name,
        dims,
        ty,
        offset: offset as usize,
        n_elems,
        n_bytes,
    })
}

/// Parses the whole header and checks that every tensor lies inside the file.
pub(crate) fn parse_header(bytes: &[u8]) -> Result<Header> {
    let mut c = Cursor { bytes, pos: 0 };
    if c.take(4, "magic")? != MAGIC {
        return Err(Error::gguf("not a GGUF file (magic bytes are not `GGUF`)"));
    }
    let version = c.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(Error::gguf(format!(
            "GGUF version {version} is not supported (only 2 and 3)"
        )));
    }
    let n_tensors = c.count("tensor count", 24)?;
    let n_kv = c.count("metadata count", 13)?;
    let mut metadata = BTreeMap::new();
    let mut kv_spans = Vec::with_capacity(n_kv);
    for _ in 0..n_kv {
        let start = c.pos;
        let key = c.string("metadata key")?;
        let ty = c.u32("metadata value type")?;
        let value = read_value(&mut c, ty, &crate::error::excerpt(&key, 80), 0)?;
        kv_spans.push((key.clone(), start..c.pos));
        metadata.insert(key, value);
    }
    let mut tensors = Vec::with_capacity(n_tensors);
    for _ in 0..n_tensors {
        tensors.push(read_tensor_info(&mut c)?);
    }
    let alignment = match metadata.get("general.alignment") {
        None => 32,
        Some(v) => match v.as_u64() {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
            _ => return Err(Error::meta("general.alignment", "must be a power of two")),
        },
    };
    let data_offset = c.pos.div_ceil(alignment) * alignment;
    for t in &tensors {
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.n_bytes))
            .filter(|&e| e <= bytes.len());
        if end.is_none() {
            return Err(Error::tensor(
                &t.name,
                format!(
                    "data (offset {} + {} bytes) runs past the end of the file ({} bytes): file truncated?",
                    data_offset + t.offset,
                    t.n_bytes,
                    bytes.len()
                ),
            ));
        }
    }
    Ok(Header {
        version,
        metadata,
        kv_spans,
        tensors,
        data_offset,
    })
}
