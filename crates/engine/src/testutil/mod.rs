//! Builders for tests: tiny synthetic GGUF models with random weights for every architecture,
//! and random-but-valid quantized blocks. Public so that integration tests and the CLI's tests
//! can use them; not part of the engine's API.

pub mod archs;

use crate::gguf::write::GgufWriter;
use crate::gguf::{GgmlType, Value};
use crate::sample::Rng;
use half::f16;

/// Uniform floats in [-scale, scale).
pub fn rand_f32(rng: &mut Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
        .collect()
}

/// Encodes floats as Q8_0 blocks (scale = amax/127 as f16, codes rounded).
pub fn quantize_q8_0(x: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(x.len() / 32 * 34);
    for b in x.chunks_exact(32) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = f16::from_f32(amax / 127.0);
        let inv = if d.to_f32() > 0.0 {
            1.0 / d.to_f32()
        } else {
            0.0
        };
        out.extend_from_slice(&d.to_le_bytes());
        out.extend(
            b.iter()
                .map(|v| ((v * inv).round().clamp(-127.0, 127.0) as i8) as u8),
        );
    }
    out
}

/// Random bytes that form valid blocks of `ty` (scales set to small positive halves).
pub fn random_blocks(rng: &mut Rng, ty: GgmlType, n_elems: usize) -> Vec<u8> {
    let blocks = n_elems / ty.block_elems();
    let mut out = Vec::with_capacity(blocks * ty.block_bytes());
    for _ in 0..blocks {
        let mut b: Vec<u8> = (0..ty.block_bytes())
            .map(|_| rng.next_u64() as u8)
            .collect();
        let mut set_half =
            |at: usize, v: f32| b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
        let s = 0.001 + rng.next_f64() as f32 * 0.01;
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => set_half(0, s),
            GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => {
                set_half(0, s);
                set_half(2, s * 0.5);
            }
            GgmlType::Q6_K => set_half(208, s),
            GgmlType::Q2_K => {
                set_half(80, s);
                set_half(82, s * 0.5);
            }
            GgmlType::Q3_K => set_half(108, s),
            GgmlType::IQ4_NL | GgmlType::IQ4_XS | GgmlType::Q1_0 | GgmlType::Q2_0 => set_half(0, s),
            GgmlType::TQ2_0 => set_half(64, s),
            GgmlType::TQ1_0 => set_half(52, s),
            // An exponent near 2^-7 keeps MXFP4 values small.
            GgmlType::MXFP4 => b[0] = 120,
            GgmlType::F16 | GgmlType::BF16 | GgmlType::F32 => {
                return match ty {
                    GgmlType::F32 => rand_f32(rng, n_elems, 1.0)
                        .iter()
                        .flat_map(|v| v.to_le_bytes())
                        .collect(),
                    GgmlType::F16 => rand_f32(rng, n_elems, 1.0)
                        .iter()
                        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
                        .collect(),
                    _ => rand_f32(rng, n_elems, 1.0)
                        .iter()
                        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                        .collect(),
                }
            }
        }
        out.extend_from_slice(&b);
    }
    out
}

/// Shape of a tiny model.
#[derive(Clone, Copy)]
pub struct Tiny {
    pub arch: &'static str,
    pub vocab: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub ctx: usize,
    pub window: usize,
    /// Matrices as Q8_0 (the quantized path) or F32 (exact float path).
    pub quantized: bool,
    /// An `output.weight` of its own instead of the token embeddings (tied).
    pub untied_output: bool,
}

impl Tiny {
    pub fn gemma3() -> Self {
        Self {
            arch: "gemma3",
            vocab: 96,
            n_embd: 64,
            n_layer: 6,
            n_head: 2,
            n_head_kv: 1,
            head_dim: 32,
            n_ff: 128,
            ctx: 256,
            window: 8,
            quantized: true,
            untied_output: false,
        }
    }
    pub fn llama() -> Self {
        Self {
            arch: "llama",
            n_head: 4,
            n_head_kv: 2,
            head_dim: 16,
            n_layer: 2,
            ..Self::gemma3()
        }
    }
    pub fn gpt2() -> Self {
        Self {
            arch: "gpt2",
            n_head: 4,
            n_head_kv: 4,
            head_dim: 16,
            n_layer: 2,
            ..Self::gemma3()
        }
    }
    /// The same shape with F32 matrices.
    pub fn float(self) -> Self {
        Self {
            quantized: false,
            ..self
        }
    }
}

/// A vocabulary of `n` tokens: byte tokens, a few letters and words, and control tokens 0..3.
fn write_vocab(n: usize, w: &mut GgufWriter) {
    let mut pieces: Vec<String> = vec![
        "<pad>".into(),
        "<eos>".into(),
        "<bos>".into(),
        "<unk>".into(),
    ];
    let mut types = vec![3i32; 4];
    for b in 0..256usize.min(n.saturating_sub(40)) {
        pieces.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let words = [
        "▁", "a", "b", "c", "e", "h", "l", "o", "t", "he", "▁t", "▁the", "ll", "llo", "▁he",
        "▁hello", "▁a", "▁b",
    ];
    for wd in words {
        if pieces.len() < n {
            pieces.push(wd.to_string());
            types.push(1);
        }
    }
    while pieces.len() < n {
        pieces.push(format!("▁w{}", pieces.len()));
        types.push(1);
    }
    let scores: Vec<Value> = (0..n).map(|i| Value::F32(-(i as f32))).collect();
    w.meta("tokenizer.ggml.model", Value::Str("llama".into()))
        .meta(
            "tokenizer.ggml.tokens",
            Value::Array(pieces.into_iter().map(Value::Str).collect()),
        )
        .meta("tokenizer.ggml.scores", Value::Array(scores))
        .meta(
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        )
        .meta("tokenizer.ggml.bos_token_id", Value::U32(2))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(1))
        .meta("tokenizer.ggml.add_bos_token", Value::Bool(true))
        .meta("tokenizer.ggml.add_space_prefix", Value::Bool(false));
}

/// Serialises a tiny model of shape `t` with random Q8_0 matrices and F32 norms.
pub fn tiny_model(t: &Tiny, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut w = GgufWriter::new();
    let a = t.arch;
    w.meta("general.architecture", Value::Str(a.into()));
    let k = |s: &str| format!("{a}.{s}");
    w.meta(&k("embedding_length"), Value::U32(t.n_embd as u32))
        .meta(&k("block_count"), Value::U32(t.n_layer as u32))
        .meta(&k("attention.head_count"), Value::U32(t.n_head as u32))
        .meta(
            &k("attention.head_count_kv"),
            Value::U32(t.n_head_kv as u32),
        )
        .meta(&k("attention.key_length"), Value::U32(t.head_dim as u32))
        .meta(&k("feed_forward_length"), Value::U32(t.n_ff as u32))
        .meta(&k("context_length"), Value::U32(t.ctx as u32))
        .meta(&k("attention.layer_norm_rms_epsilon"), Value::F32(1e-6))
        .meta(&k("attention.layer_norm_epsilon"), Value::F32(1e-5))
        .meta(&k("rope.freq_base"), Value::F32(1e6))
        .meta(&k("attention.sliding_window"), Value::U32(t.window as u32));
    write_vocab(t.vocab, &mut w);
    let d = t.n_embd;
    let mut mat = |w: &mut GgufWriter, name: &str, n: usize, kk: usize| {
        let data = rand_f32(&mut rng, n * kk, 0.5);
        if t.quantized {
            w.tensor(
                name,
                &[kk as u64, n as u64],
                GgmlType::Q8_0,
                quantize_q8_0(&data),
            );
        } else {
            w.tensor_f32(name, &[kk as u64, n as u64], &data);
        }
    };
    mat(&mut w, "token_embd.weight", t.vocab, d);
    let (qn, kvn) = (t.n_head * t.head_dim, t.n_head_kv * t.head_dim);
    for il in 0..t.n_layer {
        let p = |s: &str| format!("blk.{il}.{s}");
        if a == "gpt2" {
            mat(&mut w, &p("attn_qkv.weight"), 3 * d, d);
        } else {
            mat(&mut w, &p("attn_q.weight"), qn, d);
            mat(&mut w, &p("attn_k.weight"), kvn, d);
            mat(&mut w, &p("attn_v.weight"), kvn, d);
            mat(&mut w, &p("ffn_gate.weight"), t.n_ff, d);
        }
        mat(&mut w, &p("attn_output.weight"), d, qn);
        mat(&mut w, &p("ffn_up.weight"), t.n_ff, d);
        mat(&mut w, &p("ffn_down.weight"), d, t.n_ff);
    }
    if t.untied_output {
        mat(&mut w, "output.weight", t.vocab, d);
    }
    let norm = |w: &mut GgufWriter, rng: &mut Rng, name: &str, n: usize, bias: bool| {
        let v: Vec<f32> = rand_f32(rng, n, 0.2).iter().map(|x| 1.0 + x).collect();
        w.tensor_f32(&format!("{name}.weight"), &[n as u64], &v);
        if bias {
            w.tensor_f32(&format!("{name}.bias"), &[n as u64], &rand_f32(rng, n, 0.1));
        }
    };
    let ln = a == "gpt2";
    norm(&mut w, &mut rng, "output_norm", d, ln);
    for il in 0..t.n_layer {
        let p = |s: &str| format!("blk.{il}.{s}");
        norm(&mut w, &mut rng, &p("attn_norm"), d, ln);
        norm(&mut w, &mut rng, &p("ffn_norm"), d, ln);
        if a == "gemma3" {
            norm(&mut w, &mut rng, &p("attn_q_norm"), t.head_dim, false);
            norm(&mut w, &mut rng, &p("attn_k_norm"), t.head_dim, false);
            norm(&mut w, &mut rng, &p("post_attention_norm"), d, false);
            norm(&mut w, &mut rng, &p("post_ffw_norm"), d, false);
        }
        if ln {
            for (name, n) in [
                ("attn_qkv.bias", 3 * d),
                ("attn_output.bias", d),
                ("ffn_up.bias", t.n_ff),
                ("ffn_down.bias", d),
            ] {
                w.tensor_f32(&p(name), &[n as u64], &rand_f32(&mut rng, n, 0.1));
            }
        }
    }
    if ln {
        let pe = rand_f32(&mut rng, t.ctx * d, 0.1);
        w.tensor_f32("position_embd.weight", &[d as u64, t.ctx as u64], &pe);
    }
    w.to_bytes()
}

/// The models `tests/quantize.rs` quantizes and `tools/quantize/reference.py` hands to
/// llama-quantize: F32 matrices wide enough for the K-quants, eight layers (so each mix's
/// layer rules pick different types), 4 query heads per KV head; the llama one has its own
/// output matrix and FFN rows (352) that 256-value blocks do not divide, the gemma3 one tied
/// embeddings and a width (320) that only 32-value blocks divide.
pub fn quant_models() -> Vec<(&'static str, Vec<u8>)> {
    let llama = Tiny {
        arch: "llama",
        vocab: 320,
        n_embd: 256,
        n_layer: 8,
        n_head: 8,
        n_head_kv: 2,
        head_dim: 32,
        n_ff: 352,
        untied_output: true,
        ..Tiny::gemma3().float()
    };
    let gemma3 = Tiny {
        vocab: 300,
        n_embd: 320,
        n_layer: 8,
        n_head: 4,
        n_head_kv: 1,
        head_dim: 64,
        n_ff: 512,
        ..Tiny::gemma3().float()
    };
    vec![
        ("llama", tiny_model(&llama, 11)),
        ("gemma3", tiny_model(&gemma3, 12)),
    ]
}

/// A made-up importance matrix for a `quant_models` model: every layer matrix gets sums of
/// squares drawn from a wide range (so the weighting matters) over 1024 rows.
pub fn quant_imatrix(model: &[u8], seed: u64) -> crate::quantize::Imatrix {
    use crate::quantize::imatrix::{Entry, Imatrix};
    let f = crate::gguf::GgufFile::from_bytes(model.to_vec()).expect("a generated model");
    let mut rng = Rng::new(seed);
    let mut m = Imatrix {
        datasets: vec!["made-up.txt".into()],
        chunk_count: 2,
        chunk_size: 512,
        ..Default::default()
    };
    for t in f
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("blk.") && t.dims.len() >= 2)
    {
        let cols = t.dims[0] as usize;
        let sums = rand_f32(&mut rng, cols, 1.0)
            .iter()
            .map(|v| 1024.0 * (4.0 * v).exp())
            .collect();
        m.entries.insert(
            t.name.clone(),
            Entry {
                sums,
                counts: vec![1024.0],
            },
        );
    }
    m
}

/// `~/.cache/everett/<sub>`, or `$<env>` when set.
fn cache_dir(env: &str, sub: &str) -> std::path::PathBuf {
    use std::path::PathBuf;
    std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/everett")
            .join(sub)
    })
}

/// `path` when `present`; else `None` (skip), or a panic when `$require` is set.
fn required(
    present: bool,
    path: std::path::PathBuf,
    require: &str,
    what: &str,
) -> Option<std::path::PathBuf> {
    if present {
        return Some(path);
    }
    assert!(
        std::env::var_os(require).is_none(),
        "{require} is set but {what} is missing at {}",
        path.display()
    );
    eprintln!("skipping: {what} not found at {}", path.display());
    None
}

/// The default model's path for tests: `None` (skip) when it is absent, a panic instead when
/// EVERETT_REQUIRE_MODEL is set (CI sets it after `everett pull`).
pub fn default_model() -> Option<std::path::PathBuf> {
    let p = cache_dir("EVERETT_HOME", "models").join("gemma-3-270m-q4_k_m.gguf");
    required(
        p.is_file(),
        p,
        "EVERETT_REQUIRE_MODEL",
        "the default model (run `everett pull`)",
    )
}

/// The Python that runs the end-to-end client scripts (with `openai` and `websocket-client`):
/// `None` (skip) when EVERETT_E2E_PYTHON is unset, a panic instead when EVERETT_REQUIRE_E2E is
/// set (CI builds the virtualenv and sets both).
pub fn e2e_python() -> Option<std::ffi::OsString> {
    let python = std::env::var_os("EVERETT_E2E_PYTHON");
    if python.is_none() {
        assert!(
            std::env::var_os("EVERETT_REQUIRE_E2E").is_none(),
            "EVERETT_REQUIRE_E2E is set but EVERETT_E2E_PYTHON is not"
        );
        eprintln!("skipping: EVERETT_E2E_PYTHON (python with openai, websocket-client) not set");
    }
    python
}

/// The Python with the `everett` wheel and pytest installed (a fresh virtualenv): `None`
/// (skip) when EVERETT_PY_PYTHON is unset, a panic instead when EVERETT_REQUIRE_PY is set
/// (`.ci/run` builds the wheel, installs it and sets both).
pub fn package_python() -> Option<std::ffi::OsString> {
    let python = std::env::var_os("EVERETT_PY_PYTHON");
    if python.is_none() {
        assert!(
            std::env::var_os("EVERETT_REQUIRE_PY").is_none(),
            "EVERETT_REQUIRE_PY is set but EVERETT_PY_PYTHON is not"
        );
        eprintln!("skipping: EVERETT_PY_PYTHON (python with the everett wheel and pytest) not set");
    }
    python
}

/// A runner whose forward passes take at least `.1` longer: a request of hundreds of tokens is
/// then surely still running when a test aborts it or drops its stream.
pub struct Slow<M>(pub M, pub std::time::Duration);

impl<M: crate::engine::Runner> crate::engine::Runner for Slow<M> {
    fn vocab(&self) -> usize {
        self.0.vocab()
    }
    fn context_length(&self) -> usize {
        self.0.context_length()
    }
    fn kv_config(&self, capacity_tokens: usize) -> crate::kv::KvConfig {
        self.0.kv_config(capacity_tokens)
    }
    fn forward(
        &mut self,
        b: &crate::batch::Batch,
        kv: &mut crate::kv::KvCache,
        logits: &mut Vec<f32>,
    ) -> crate::Result<()> {
        std::thread::sleep(self.1);
        self.0.forward(b, kv, logits)
    }
    fn pool(&self) -> &crate::kernels::pool::ThreadPool {
        self.0.pool()
    }
    fn can_shift(&self) -> bool {
        self.0.can_shift()
    }
    fn shift_keys(
        &self,
        kv: &mut crate::kv::KvCache,
        seq: crate::kv::SeqId,
        from: usize,
        back: usize,
    ) {
        self.0.shift_keys(kv, seq, from, back)
    }
}

/// A headless-capable Chromium binary for page tests: `None` (skip) when none is installed, a
/// panic instead when EVERETT_REQUIRE_CHROMIUM is set (CI installs one and sets it).
pub fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if found.is_none() {
        assert!(
            std::env::var_os("EVERETT_REQUIRE_CHROMIUM").is_none(),
            "EVERETT_REQUIRE_CHROMIUM is set but no chromium binary was found"
        );
        eprintln!("skipping: no headless chromium installed");
    }
    found
}

/// The DOM of the offline page at `path` after its scripts ran in headless Chromium, once the
/// page is checked to refer to no network address; `None` (skip) as for `chromium`.
pub fn page_dom(path: &std::path::Path) -> Option<String> {
    let browser = chromium()?;
    let page = std::fs::read_to_string(path).expect("the page was written");
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "page refers to the network"
    );
    let out = std::process::Command::new(browser)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom"])
        .arg(format!("file://{}", path.display()))
        .output()
        .expect("chromium runs");
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The cache of llama.cpp's tokenizer suite and chat templates (`tools/vocab/fetch.sh` fills it):
/// `None` (skip) when it is absent, a panic instead when EVERETT_REQUIRE_VOCAB is set (CI
/// fetches the suite and sets it).
pub fn vocab_dir() -> Option<std::path::PathBuf> {
    let dir = cache_dir("EVERETT_VOCAB_DIR", "vocab");
    required(
        dir.join(".version").is_file(),
        dir,
        "EVERETT_REQUIRE_VOCAB",
        "llama.cpp's vocab suite (run tools/vocab/fetch.sh)",
    )
}
