//! Which type each tensor gets in a file type's mix (`Q4_K_M` keeps some attention-value and
//! FFN-down layers in Q6_K, the output matrix in Q6_K, …): the same choices llama-quantize makes,
//! in the same tensor order, with the same fallbacks for rows a type's blocks do not divide.
//! It decides types only; converting the numbers is `quantize::rows`.

use crate::gguf::GgmlType;

/// A file type as `llama-quantize` names it (`--type`); `id` is its `general.file_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum FileType {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q2_K,
    Q3_K_S,
    Q3_K_M,
    Q3_K_L,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ4_NL,
    IQ4_XS,
}

/// (type, name, general.file_type, default tensor type).
const FILE_TYPES: [(FileType, &str, u32, GgmlType); 19] = [
    (FileType::F32, "F32", 0, GgmlType::F32),
    (FileType::F16, "F16", 1, GgmlType::F16),
    (FileType::BF16, "BF16", 32, GgmlType::BF16),
    (FileType::Q8_0, "Q8_0", 7, GgmlType::Q8_0),
    (FileType::Q4_0, "Q4_0", 2, GgmlType::Q4_0),
    (FileType::Q4_1, "Q4_1", 3, GgmlType::Q4_1),
    (FileType::Q5_0, "Q5_0", 8, GgmlType::Q5_0),
    (FileType::Q5_1, "Q5_1", 9, GgmlType::Q5_1),
    (FileType::Q2_K, "Q2_K", 10, GgmlType::Q2_K),
    (FileType::Q3_K_S, "Q3_K_S", 11, GgmlType::Q3_K),
    (FileType::Q3_K_M, "Q3_K_M", 12, GgmlType::Q3_K),
    (FileType::Q3_K_L, "Q3_K_L", 13, GgmlType::Q3_K),
    (FileType::Q4_K_S, "Q4_K_S", 14, GgmlType::Q4_K),
    (FileType::Q4_K_M, "Q4_K_M", 15, GgmlType::Q4_K),
    (FileType::Q5_K_S, "Q5_K_S", 16, GgmlType::Q5_K),
    (FileType::Q5_K_M, "Q5_K_M", 17, GgmlType::Q5_K),
    (FileType::Q6_K, "Q6_K", 18, GgmlType::Q6_K),
    (FileType::IQ4_NL, "IQ4_NL", 25, GgmlType::IQ4_NL),
    (FileType::IQ4_XS, "IQ4_XS", 30, GgmlType::IQ4_XS),
];

impl FileType {
    /// Parses a `--type` name (any case; `Q3_K`, `Q4_K`, `Q5_K` mean their `_M` mixes).
    pub fn parse(name: &str) -> Option<Self> {
        let up = name.to_ascii_uppercase();
        let up = match up.as_str() {
            "Q3_K" | "Q4_K" | "Q5_K" => format!("{up}_M"),
            _ => up,
        };
        FILE_TYPES.iter().find(|t| t.1 == up).map(|t| t.0)
    }

    fn row(self) -> &'static (FileType, &'static str, u32, GgmlType) {
        FILE_TYPES
            .iter()
            .find(|t| t.0 == self)
            .expect("every file type is listed")
    }

    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// The names `parse` accepts, for error messages and `--help`.
    pub fn names() -> impl Iterator<Item = &'static str> {
        FILE_TYPES.iter().map(|t| t.1)
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`).
    pub fn id(self) -> u32 {
        self.row().2
    }

    /// The type most tensors get.
    pub fn default_type(self) -> GgmlType {
        self.row().3
    }
}

/// What the mix needs to know about the model (llama.cpp's `hparams` as the quantizer reads them).
#[derive(Debug, Clone)]
pub struct ModelShape {
    pub arch: String,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_expert: usize,
}

impl ModelShape {
    fn n_gqa(&self) -> usize {
        self.n_head.checked_div(self.n_head_kv).unwrap_or(0)
    }

    /// llama.cpp's `LLM_TYPE_70B`, the one size class the mix looks at.
    fn is_70b(&self) -> bool {
        match self.arch.as_str() {
            "llama" => self.n_layer == 80 && self.n_head != self.n_head_kv,
            "qwen2" | "deci" | "olmo" => self.n_layer == 80,
            "jais2" => self.n_layer == 68,
            _ => false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Category {
    TokenEmbd,
    AttnQ,
    AttnK,
    AttnV,
    AttnQkv,
    AttnKvB,
    AttnOutput,
    FfnUp,
    FfnGate,
    FfnDown,
    Output,
    Other,
}

fn category(name: &str) -> Category {
    use Category::*;
    match name {
        "output.weight" => return Output,
        "token_embd.weight" | "per_layer_token_embd.weight" => return TokenEmbd,
        _ => {}
    }
    let table = [
        ("attn_qkv.weight", AttnQkv),
        ("attn_kv_b.weight", AttnKvB),
        ("attn_v.weight", AttnV),
        ("attn_k.weight", AttnK),
        ("attn_q.weight", AttnQ),
        ("attn_output.weight", AttnOutput),
        ("ffn_up", FfnUp),
        ("ffn_gate", FfnGate),
        ("ffn_down", FfnDown),
    ];
    table
        .iter()
        .find(|(s, _)| name.contains(s))
        .map_or(Other, |t| t.1)
}

/// Whether a tensor is a weight matrix the mix may change (norms, routers, 1-D and tiny tensors
/// stay as they are; the output matrix too under `--keep-output`).
pub fn allows_quantization(name: &str, n_dims: usize, keep_output: bool) -> bool {
    const NEVER: [&str; 11] = [
        "_norm.weight",
        "ffn_gate_inp.weight",
        "ffn_gate_tid2eid.weight",
        "altup",
        "laurel",
        "per_layer_model_proj",
        "ssm_conv1d",
        "shortconv.conv.weight",
        "attn_rel_b.weight",
        ".position_embd",
        ".rel_pos",
    ];
    n_dims >= 2
        && name.ends_with("weight")
        && !(keep_output && name == "output.weight")
        && !NEVER.iter().any(|s| name.contains(s))
        && !name.contains("time_mix_")
        && name != "position_embd.weight"
        && name != "token_types.weight"
}

/// Picks types tensor by tensor, in file-writing order; its counters are the mix's state.
pub struct Mix {
    ftype: FileType,
    shape: ModelShape,
    tied_embeddings: bool,
    keep_output: bool,
    has_imatrix: bool,
    n_attention_wv: usize,
    i_attention_wv: usize,
    i_ffn_down: usize,
    i_ffn_gate: usize,
    i_ffn_up: usize,
    /// Tensors whose rows the chosen type's blocks did not divide.
    pub n_fallback: usize,
}

impl Mix {
    /// `names`: every tensor in writing order (the mix counts attention-value tensors first).
    pub fn new(
        ftype: FileType,
        shape: ModelShape,
        names: &[&str],
        keep_output: bool,
        has_imatrix: bool,
    ) -> Self {
        let cats: Vec<Category> = names.iter().map(|n| category(n)).collect();
        Self {
            ftype,
            shape,
            tied_embeddings: !cats.contains(&Category::Output),
            keep_output,
            has_imatrix,
            n_attention_wv: cats
                .iter()
                .filter(|c| matches!(c, Category::AttnV | Category::AttnQkv | Category::AttnKvB))
                .count(),
            i_attention_wv: 0,
            i_ffn_down: 0,
            i_ffn_gate: 0,
            i_ffn_up: 0,
            n_fallback: 0,
        }
    }

    /// The type for the next tensor (`dims[0]`: its row length). Call once per tensor, in order.
    pub fn choose(&mut self, name: &str, dims: &[u64], current: GgmlType) -> GgmlType {
        let n_dims = dims.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
        if !allows_quantization(name, n_dims, self.keep_output) {
            return current;
        }
        let default = self.ftype.default_type();
        if matches!(default, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
            return default;
        }
        let ty = self.by_role(name, dims[0], default);
        self.fallback(dims[0], ty)
    }

    fn layer(&self, counter: usize, name: &str) -> usize {
        if self.shape.n_expert > 1 {
            // Expert tensors of a layer need not be consecutive: read the layer from the name.
            if let Some(i) = name
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse().ok())
            {
                return i;
            }
        }
        counter
    }

    fn by_role(&mut self, name: &str, ncols: u64, default: GgmlType) -> GgmlType {
        use FileType as F;
        use GgmlType as T;
        let ft = self.ftype;
        let n_layer = self.shape.n_layer;
        let more_bits = |i: usize, n: usize| {
            i < n / 8 || i >= 7 * n / 8 || (i as i64 - (n / 8) as i64).rem_euclid(3) == 2
        };
        let cat = category(name);
        let mut ty = default;
        if cat == Category::Output || (self.tied_embeddings && cat == Category::TokenEmbd) {
            if self.shape.arch == "falcon" || !ncols.is_multiple_of(default.block_elems() as u64) {
                ty = T::Q8_0;
            } else if ty != T::Q8_0 {
                ty = T::Q6_K;
            }
        } else if cat == Category::TokenEmbd {
            // Untied embeddings keep the default type for every file type offered here.
        } else if matches!(cat, Category::AttnV | Category::AttnQkv | Category::AttnKvB) {
            let gqa4 = self.shape.n_gqa() >= 4;
            let i = self.i_attention_wv;
            match ft {
                F::Q2_K => ty = if gqa4 { T::Q4_K } else { T::Q3_K },
                F::Q3_K_M => ty = if i < 2 { T::Q5_K } else { T::Q4_K },
                F::Q3_K_L => ty = T::Q5_K,
                F::IQ4_NL | F::IQ4_XS if gqa4 => ty = T::Q5_K,
                F::Q4_K_M | F::Q5_K_M if more_bits(i, self.n_attention_wv) => ty = T::Q6_K,
                F::Q4_K_S if i < 4 => ty = T::Q5_K,
                _ => {}
            }
            if self.shape.is_70b() && matches!(ty, T::Q3_K | T::Q4_K) {
                ty = T::Q5_K;
            }
            if self.shape.n_expert == 8 {
                ty = T::Q8_0;
            }
            self.i_attention_wv += 1;
        } else if cat == Category::AttnK {
            if self.shape.n_expert == 8 {
                ty = T::Q8_0;
            }
        } else if cat == Category::FfnDown {
            let i = self.layer(self.i_ffn_down, name);
            let falcon = self.shape.arch == "falcon";
            match ft {
                F::Q2_K => ty = T::Q3_K,
                F::Q3_K_M => {
                    ty = if i < n_layer / 16 {
                        T::Q5_K
                    } else if !falcon || more_bits(i, n_layer) {
                        T::Q4_K
                    } else {
                        T::Q3_K
                    }
                }
                F::Q3_K_L => ty = if falcon { T::Q4_K } else { T::Q5_K },
                F::Q4_K_M => {
                    if falcon {
                        ty = if i < n_layer / 16 {
                            T::Q6_K
                        } else if more_bits(i, n_layer) {
                            T::Q5_K
                        } else {
                            T::Q4_K
                        };
                    } else if more_bits(i, n_layer) {
                        ty = T::Q6_K;
                    }
                }
                F::IQ4_NL | F::IQ4_XS if i < n_layer / 8 && !self.has_imatrix => ty = T::Q5_K,
                F::Q5_K_M if more_bits(i, n_layer) => ty = T::Q6_K,
                F::Q4_K_S if !falcon && i < n_layer / 8 => ty = T::Q5_K,
                // With an importance matrix the first layers get the variant with a min.
                F::Q4_0 if self.has_imatrix && i < n_layer / 8 => ty = T::Q4_1,
                F::Q5_0 if self.has_imatrix && i < n_layer / 8 => ty = T::Q5_1,
                _ => {}
            }
            self.i_ffn_down += 1;
        } else if cat == Category::AttnOutput {
            if self.shape.arch != "falcon" {
                if self.shape.n_expert == 8 {
                    if matches!(
                        ft,
                        F::Q2_K
                            | F::Q3_K_S
                            | F::Q3_K_M
                            | F::IQ4_NL
                            | F::Q4_K_S
                            | F::Q4_K_M
                            | F::IQ4_XS
                    ) {
                        ty = T::Q5_K;
                    }
                } else {
                    match ft {
                        F::Q2_K => ty = T::Q3_K,
                        F::Q3_K_M => ty = T::Q4_K,
                        F::Q3_K_L => ty = T::Q5_K,
                        _ => {}
                    }
                }
            } else if ft == F::Q3_K_L {
                ty = T::Q4_K;
            }
        } else if cat == Category::FfnGate {
            self.i_ffn_gate += 1;
        } else if cat == Category::FfnUp {
            self.i_ffn_up += 1;
        }
        ty
    }

    /// A type whose blocks do not divide the rows falls back to a 32-block type, else F16.
    fn fallback(&mut self, ncols: u64, ty: GgmlType) -> GgmlType {
        use GgmlType as T;
        if ncols.is_multiple_of(ty.block_elems() as u64) {
            return ty;
        }
        self.n_fallback += 1;
        let to = match ty {
            T::IQ4_XS => T::IQ4_NL,
            T::Q2_K | T::Q3_K => T::Q4_0,
            T::Q4_K => T::Q5_0,
            T::Q5_K => T::Q5_1,
            T::Q6_K => T::Q8_0,
            other => other,
        };
        if !ncols.is_multiple_of(to.block_elems() as u64) {
            T::F16
        } else {
            to
        }
    }
}
