//! GGUF model files: a memory-mapped reader with a typed view of metadata and a tensor directory.
//! This module only reads; turning metadata into a model config is `model::config`, and turning
//! tensor bytes into numbers is `kernels::quant`. `write` builds files for tests
//! and `quantize`.

mod parse;
pub mod types;
pub mod write;

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;
pub use types::GgmlType;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            Value::I8(v) => Some(v as f64),
            Value::I16(v) => Some(v as f64),
            Value::I32(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    /// A short human rendering (arrays summarised) for `everett inspect`.
    pub fn summary(&self) -> String {
        match self {
            Value::Str(s) if s.len() > 80 => format!("{:?}…", &s[..s.floor_char_boundary(80)]),
            Value::Str(s) => format!("{s:?}"),
            Value::Bool(b) => b.to_string(),
            Value::Array(items) => {
                let head: Vec<String> = items.iter().take(4).map(|v| v.summary()).collect();
                let more = if items.len() > 4 { ", …" } else { "" };
                format!("[{}{more}] ({} items)", head.join(", "), items.len())
            }
            v => v.as_f64().map(|f| f.to_string()).unwrap_or_default(),
        }
    }
}

/// Where a tensor lives and what it holds. `dims[0]` is the row length (GGML order).
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Relative to the start of the data section.
    pub offset: usize,
    pub n_elems: usize,
    pub n_bytes: usize,
}

enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

/// An open GGUF file.
pub struct GgufFile {
    storage: Storage,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    kv_spans: Vec<(String, std::ops::Range<usize>)>,
    data_offset: usize,
}

impl GgufFile {
    /// Memory-maps and parses `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        // SAFETY: the map is read-only; a file changed underneath us is the user's doing.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io)?;
        Self::from_storage(Storage::Mapped(map))
    }

    /// Parses an in-memory file (tests, fuzzing).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<Self> {
        let bytes = match &storage {
            Storage::Mapped(m) => &m[..],
            Storage::Owned(v) => &v[..],
        };
        let h = parse::parse_header(bytes)?;
        Ok(Self {
            storage,
            version: h.version,
            metadata: h.metadata,
            tensors: h.tensors,
            kv_spans: h.kv_spans,
            data_offset: h.data_offset,
        })
    }

    fn bytes(&self) -> &[u8] {
        match &self.storage {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }

    /// Each metadata entry as its key and its bytes in the file (key, type and value), in file
    /// order: what a tool that rewrites the file copies verbatim.
    pub fn raw_metadata(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.kv_spans
            .iter()
            .map(|(k, r)| (k.as_str(), &self.bytes()[r.clone()]))
    }

    pub fn tensor_info(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor (bounds were checked when the file was parsed).
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let start = self.data_offset + t.offset;
        &self.bytes()[start..start + t.n_bytes]
    }

    /// Tells the OS it may drop the mapped pages (after weights were repacked into our layout), so
    /// they stop counting towards resident memory.
    pub fn release_pages(&self) {
        #[cfg(unix)]
        if let Storage::Mapped(m) = &self.storage {
            // SAFETY: advisory only; the mapping stays valid and re-faults from the file if read.
            let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// Like `release_pages`, for the whole pages inside bytes `range` of one tensor's data: the
    /// loader calls it while repacking, so the source and the packed copy never add up in memory.
    pub fn release_tensor_range(&self, t: &TensorInfo, range: std::ops::Range<usize>) {
        #[cfg(unix)]
        if let Storage::Mapped(m) = &self.storage {
            const PAGE: usize = 4096;
            let base = self.data_offset + t.offset;
            let start = (base + range.start).next_multiple_of(PAGE);
            let end = (base + range.end.min(t.n_bytes)) / PAGE * PAGE;
            if end > start {
                // SAFETY: advisory only, as in `release_pages`; the range lies inside the map.
                let _ = unsafe {
                    m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, end - start)
                };
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn get_u64(&self, key: &str) -> Result<u64> {
        let v = self.get(key).ok_or_else(|| Error::meta(key, "missing"))?;
        v.as_u64().ok_or_else(|| {
            Error::meta(
                key,
                format!("expected an unsigned integer, found {}", v.summary()),
            )
        })
    }

    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let v = self.get(key).ok_or_else(|| Error::meta(key, "missing"))?;
        v.as_f64()
            .ok_or_else(|| Error::meta(key, format!("expected a number, found {}", v.summary())))
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.get(key) {
            Some(Value::Str(s)) => Ok(s),
            Some(v) => Err(Error::meta(
                key,
                format!("expected a string, found {}", v.summary()),
            )),
            None => Err(Error::meta(key, "missing")),
        }
    }

    pub fn get_bool(&self, key: &str) -> Option<bool> {
        match self.get(key) {
            Some(Value::Bool(b)) => Some(*b),
            Some(v) => v.as_u64().map(|n| n != 0),
            None => None,
        }
    }

    pub fn get_array(&self, key: &str) -> Result<&[Value]> {
        match self.get(key) {
            Some(Value::Array(a)) => Ok(a),
            Some(v) => Err(Error::meta(
                key,
                format!("expected an array, found {}", v.summary()),
            )),
            None => Err(Error::meta(key, "missing")),
        }
    }
}
