//! The model's hyper-parameters, read once from GGUF metadata into a typed struct and checked
//! for consistency (a zero head count or a head size that does not divide would otherwise
//! surface as a panic deep inside a kernel).

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// The largest size any hyper-parameter may have (16 Mi): far beyond real models, small enough
/// that products of two sizes cannot overflow.
const MAX_DIM: usize = 1 << 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Gemma2,
    Gemma3,
    /// Llama 2/3, Mistral, Mixtral (with experts), SmolLM.
    Llama,
    Qwen2,
    Qwen3,
    Qwen2Moe,
    Qwen3Moe,
    Phi3,
    Gpt2,
}

/// RoPE frequency scaling, as llama.cpp reads it (`rope.scaling.*`, `rope_freqs`): the angle of
/// pair i at position p is `p · freq_scale · base^(-2i/d) / factor[i]`, and sine and cosine are
/// multiplied by `attn_factor`.
#[derive(Debug, Clone)]
pub struct RopeScaling {
    /// 1 / `rope.scaling.factor` for linear scaling, else 1.
    pub freq_scale: f32,
    /// `rope.scaling.attn_factor` (Phi-3 LongRoPE), else 1.
    pub attn_factor: f32,
    /// `rope.scaling.original_context_length`: Phi-3 takes its long factors beyond it.
    pub original_context: usize,
    /// `rope.scaling.type` as written (none, linear, longrope, yarn).
    pub kind: String,
    /// YaRN's original context (`original_context_length`) when the type is yarn.
    pub yarn_context: Option<usize>,
}

/// Mixture-of-experts sizes.
#[derive(Debug, Clone, Copy)]
pub struct Experts {
    pub count: usize,
    pub used: usize,
    /// Hidden size of one expert.
    pub n_ff: usize,
    /// Hidden size of the shared expert (Qwen2-MoE), when there is one.
    pub n_ff_shared: usize,
    /// Renormalise the chosen experts' weights to sum to 1.
    pub norm_weights: bool,
    /// Multiplies the chosen experts' weights (`expert_weights_scale`; 1 when absent).
    pub weights_scale: f32,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub arch: Arch,
    /// `general.architecture` as written.
    pub arch_name: String,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    pub n_ff: usize,
    pub eps: f32,
    pub rope_base: f32,
    /// RoPE base of the sliding-window layers (`rope.freq_base_swa`; else Gemma 3: 10 000,
    /// others: `rope_base`).
    pub rope_base_local: f32,
    pub rope_scaling: RopeScaling,
    pub sliding_window: Option<usize>,
    /// Every `swa_pattern`-th layer is global, the others slide (Gemma 2: 2, Gemma 3: 6).
    pub swa_pattern: usize,
    /// Query scale before the softmax (1/sqrt(head_dim) unless the architecture says).
    pub attn_scale: f32,
    /// `s ↦ cap · tanh(s / cap)` on attention scores and on the logits (Gemma 2).
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    pub experts: Option<Experts>,
    pub context_length: usize,
    pub vocab: usize,
}

impl Config {
    pub fn from_gguf(f: &GgufFile) -> Result<Self> {
        let arch_name = f.get_str("general.architecture")?;
        let arch = match arch_name {
            "gemma2" => Arch::Gemma2,
            "gemma3" => Arch::Gemma3,
            "llama" | "mistral" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            "qwen2moe" => Arch::Qwen2Moe,
            "qwen3moe" => Arch::Qwen3Moe,
            "phi3" => Arch::Phi3,
            "gpt2" => Arch::Gpt2,
            other => return Err(Error::UnsupportedArchitecture(other.to_string())),
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let usize_of = |k: &str| -> Result<usize> { Ok(f.get_u64(&key(k))? as usize) };
        let opt_usize = |k: &str| -> Result<Option<usize>> {
            match f.get(&key(k)) {
                Some(_) => usize_of(k).map(Some),
                None => Ok(None),
            }
        };
        let opt_f32 = |k: &str| f.get_f64(&key(k)).ok().map(|v| v as f32);
        let n_embd = usize_of("embedding_length")?;
        let n_head = usize_of("attention.head_count")?;
        let n_head_kv = opt_usize("attention.head_count_kv")?.unwrap_or(n_head);
        let head_dim = match opt_usize("attention.key_length")? {
            Some(v) => v,
            None if n_head > 0 => n_embd / n_head,
            None => 0,
        };
        let eps_key = if arch == Arch::Gpt2 {
            "attention.layer_norm_epsilon"
        } else {
            "attention.layer_norm_rms_epsilon"
        };
        let eps = f.get_f64(&key(eps_key)).unwrap_or(1e-5) as f32;
        let rope_base = opt_f32("rope.freq_base").unwrap_or(10_000.0);
        let context_length = usize_of("context_length")?;
        let rope_scaling = Self::rope_scaling(f, arch_name, context_length)?;
        let (sliding_window, swa_pattern) = match arch {
            // Gemma 3 without a window attends globally everywhere (as llama.cpp reads it).
            Arch::Gemma3 => (opt_usize("attention.sliding_window")?.filter(|&w| w > 0), 6),
            Arch::Gemma2 => (
                Some(opt_usize("attention.sliding_window")?.unwrap_or(4096)),
                2,
            ),
            // llama.cpp runs Phi-3 without its window (its files disagree on the value).
            _ => (None, 1),
        };
        let swa_pattern = opt_usize("attention.sliding_window_pattern")?.unwrap_or(swa_pattern);
        let n_layer = usize_of("block_count")?;
        // Gemma 2 and 3 27B scale queries by the model width per head, the others by the head
        // size (llama.cpp tells the 27B models by their layer counts).
        let big_gemma = matches!((arch, n_layer), (Arch::Gemma2, 46) | (Arch::Gemma3, 62));
        let attn_scale = if big_gemma && n_head > 0 {
            1.0 / ((n_embd / n_head) as f32).sqrt()
        } else {
            1.0 / (head_dim.max(1) as f32).sqrt()
        };
        let (attn_softcap, final_softcap) = match arch {
            Arch::Gemma2 => (
                Some(opt_f32("attn_logit_softcapping").unwrap_or(50.0)),
                Some(opt_f32("final_logit_softcapping").unwrap_or(30.0)),
            ),
            Arch::Gemma3 => (
                None,
                opt_f32("final_logit_softcapping").filter(|&c| c > 0.0),
            ),
            _ => (None, None),
        };
        let n_ff = usize_of("feed_forward_length").or_else(|e| match arch {
            Arch::Qwen3Moe => Ok(0),
            _ => Err(e),
        })?;
        let experts = match opt_usize("expert_count")? {
            Some(count) if count > 0 => {
                let used = usize_of("expert_used_count")?;
                Some(Experts {
                    count,
                    used,
                    n_ff: match (opt_usize("expert_feed_forward_length")?, arch) {
                        (Some(v), _) => v,
                        (None, Arch::Qwen2Moe) => n_ff.checked_div(used).unwrap_or(0),
                        (None, _) => n_ff,
                    },
                    n_ff_shared: match arch {
                        Arch::Qwen2Moe => {
                            opt_usize("expert_shared_feed_forward_length")?.unwrap_or(n_ff)
                        }
                        _ => 0,
                    },
                    norm_weights: matches!(arch, Arch::Llama | Arch::Qwen3Moe),
                    weights_scale: opt_f32("expert_weights_scale")
                        .filter(|&w| w != 0.0)
                        .unwrap_or(1.0),
                })
            }
            _ if matches!(arch, Arch::Qwen2Moe | Arch::Qwen3Moe) => {
                return Err(Error::meta(
                    &key("expert_count"),
                    "missing or 0 for a MoE model",
                ))
            }
            _ => None,
        };
        let vocab = f
            .get_array("tokenizer.ggml.tokens")
            .map(|a| a.len())
            .unwrap_or(0);
        let c = Config {
            arch,
            arch_name: arch_name.to_string(),
            n_embd,
            n_layer,
            n_head,
            n_head_kv,
            head_dim,
            n_ff,
            eps,
            rope_base,
            rope_base_local: opt_f32("rope.freq_base_swa").unwrap_or(match arch {
                Arch::Gemma3 => 10_000.0,
                _ => rope_base,
            }),
            rope_scaling,
            sliding_window,
            swa_pattern,
            attn_scale,
            attn_softcap,
            final_softcap,
            experts,
            context_length,
            vocab,
        };
        c.validate()?;
        // Every block owns at least one tensor: a block count beyond the tensor count is a
        // corrupt header, caught here before anything is sized by it.
        if c.n_layer > f.tensors.len() {
            return Err(Error::meta(
                &key("block_count"),
                format!("{} blocks but only {} tensors", c.n_layer, f.tensors.len()),
            ));
        }
        Ok(c)
    }

    /// Reads `rope.scaling.*`; kinds llama.cpp computes differently from plain RoPE and that
    /// everett does not implement (YaRN) are refused by name.
    fn rope_scaling(f: &GgufFile, arch: &str, ctx: usize) -> Result<RopeScaling> {
        let key = |k: &str| format!("{arch}.rope.scaling.{k}");
        let kind = match f.get(&key("type")) {
            Some(crate::gguf::Value::Str(s)) => s.clone(),
            Some(v) => {
                return Err(Error::meta(
                    &key("type"),
                    format!("{} is not a string", v.summary()),
                ))
            }
            None => "none".to_string(),
        };
        let factor = f
            .get_f64(&key("factor"))
            .or_else(|_| f.get_f64(&format!("{arch}.rope.scale_linear")))
            .unwrap_or(0.0) as f32;
        let freq_scale = match kind.as_str() {
            "none" => 1.0,
            "linear" | "longrope" | "yarn" if factor != 0.0 => 1.0 / factor,
            "linear" | "longrope" | "yarn" => 1.0,
            other => {
                return Err(Error::meta(
                    &key("type"),
                    format!(
                        "RoPE scaling `{other}` is not supported (none, linear, longrope, yarn)"
                    ),
                ))
            }
        };
        // DeepSeek's YaRN variant (a log multiplier on the attention scale) is another formula.
        if f.get_f64(&key("yarn_log_multiplier"))
            .is_ok_and(|m| m != 0.0)
        {
            return Err(Error::meta(
                &key("yarn_log_multiplier"),
                "YaRN with a log multiplier (DeepSeek's) is not supported",
            ));
        }
        let attn_factor = f.get_f64(&key("attn_factor")).unwrap_or(1.0) as f32;
        let original_context = f
            .get_u64(&key("original_context_length"))
            .map_or(ctx, |v| v as usize);
        Ok(RopeScaling {
            freq_scale,
            attn_factor,
            original_context,
            yarn_context: (kind == "yarn").then_some(original_context),
            kind,
        })
    }

    fn validate(&self) -> Result<()> {
        let check = |ok: bool, key: &str, what: String| {
            if ok {
                Ok(())
            } else {
                Err(Error::meta(key, what))
            }
        };
        // Products of these sizes index memory: bounding each keeps them far from overflow.
        let sizes = [
            (self.n_embd, "embedding_length"),
            (self.n_layer, "block_count"),
            (self.n_head, "attention.head_count"),
            (self.n_head_kv, "attention.head_count_kv"),
            (self.head_dim, "attention.key_length"),
            (self.n_ff, "feed_forward_length"),
            (self.context_length, "context_length"),
            (self.vocab, "tokenizer.ggml.tokens"),
        ];
        for (v, key) in sizes {
            check(
                v <= MAX_DIM,
                key,
                format!("{v} exceeds the limit {MAX_DIM}"),
            )?;
        }
        check(
            self.n_head * self.head_dim <= MAX_DIM,
            "attention.key_length",
            format!(
                "{} heads of {} exceed the limit {MAX_DIM}",
                self.n_head, self.head_dim
            ),
        )?;
        check(self.n_embd > 0, "embedding_length", "must be > 0".into())?;
        check(self.n_layer > 0, "block_count", "must be > 0".into())?;
        check(
            self.n_head > 0,
            "attention.head_count",
            "must be > 0".into(),
        )?;
        check(
            self.n_head_kv > 0 && self.n_head.is_multiple_of(self.n_head_kv),
            "attention.head_count_kv",
            format!(
                "{} must divide the head count {}",
                self.n_head_kv, self.n_head
            ),
        )?;
        check(
            self.head_dim > 0 && self.head_dim.is_multiple_of(2),
            "attention.key_length",
            format!("{} must be even", self.head_dim),
        )?;
        check(
            self.n_ff > 0 || self.experts.is_some(),
            "feed_forward_length",
            "must be > 0".into(),
        )?;
        check(
            self.vocab > 0,
            "tokenizer.ggml.tokens",
            "vocabulary is empty".into(),
        )?;
        check(
            self.eps.is_finite() && self.eps > 0.0,
            "layer_norm epsilon",
            format!("{} is not a positive number", self.eps),
        )?;
        // RoPE frequencies come from logarithms and quotients of these: anything else would
        // turn into NaN positions, not an error.
        for (v, key) in [
            (self.rope_base, "rope.freq_base"),
            (self.rope_base_local, "rope.freq_base_swa"),
        ] {
            check(
                v.is_finite() && v > 1.0,
                key,
                format!("{v} must be above 1"),
            )?;
        }
        let rs = &self.rope_scaling;
        for (v, key) in [
            (rs.freq_scale, "rope.scaling.factor"),
            (rs.attn_factor, "rope.scaling.attn_factor"),
        ] {
            check(
                v.is_finite() && v > 0.0,
                key,
                format!("gives {v}, not a positive number"),
            )?;
        }
        check(
            rs.yarn_context.is_none_or(|c| c > 0),
            "rope.scaling.original_context_length",
            "must be > 0 for YaRN".into(),
        )?;
        if let Some(e) = &self.experts {
            check(
                e.count <= 1024 && e.used > 0 && e.used <= e.count,
                "expert_used_count",
                format!("{} of {} experts", e.used, e.count),
            )?;
            check(
                e.n_ff > 0 && e.n_ff <= MAX_DIM && e.n_ff_shared <= MAX_DIM,
                "expert_feed_forward_length",
                format!("{} must be in 1..={MAX_DIM}", e.n_ff),
            )?;
        }
        check(
            self.sliding_window != Some(0),
            "attention.sliding_window",
            "must be > 0".into(),
        )?;
        Ok(())
    }

    /// The attention window of layer `il`: every `swa_pattern`-th layer is global (Gemma 3:
    /// layers 5, 11, …; Gemma 2: the odd ones), the others slide.
    pub fn layer_window(&self, il: usize) -> Option<usize> {
        match self.sliding_window {
            Some(w) if self.swa_pattern > 1 && !(il + 1).is_multiple_of(self.swa_pattern) => {
                Some(w)
            }
            Some(w) if self.swa_pattern == 0 => Some(w),
            _ => None,
        }
    }

    pub fn kv_row(&self) -> usize {
        self.n_head_kv * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::write::GgufWriter;
    use crate::gguf::Value;

    fn file(arch: &str, extra: &[(&str, Value)]) -> GgufFile {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", Value::Str(arch.into()));
        for (k, v) in [
            ("embedding_length", 64),
            ("block_count", 1),
            ("attention.head_count", 2),
            ("feed_forward_length", 128),
            ("context_length", 256),
        ] {
            w.meta(&format!("{arch}.{k}"), Value::U32(v));
        }
        w.meta(
            "tokenizer.ggml.tokens",
            Value::Array(vec![Value::Str("a".into())]),
        );
        for (k, v) in extra {
            w.meta(&format!("{arch}.{k}"), v.clone());
        }
        w.tensor_f32("x", &[1], &[0.0]);
        GgufFile::from_bytes(w.to_bytes()).unwrap()
    }

    #[test]
    fn what_is_not_computed_is_refused_by_name() {
        let su = [("rope.scaling.type", Value::Str("su".into()))];
        let e = Config::from_gguf(&file("llama", &su))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`su`"), "{e}");
        let deepseek_yarn = [
            ("rope.scaling.type", Value::Str("yarn".into())),
            ("rope.scaling.yarn_log_multiplier", Value::F32(0.1)),
        ];
        let e = Config::from_gguf(&file("llama", &deepseek_yarn))
            .unwrap_err()
            .to_string();
        assert!(e.contains("yarn_log_multiplier"), "{e}");
        let yarn = [
            ("rope.scaling.type", Value::Str("yarn".into())),
            ("rope.scaling.factor", Value::F32(4.0)),
        ];
        let c = Config::from_gguf(&file("llama", &yarn)).unwrap();
        assert_eq!(c.rope_scaling.yarn_context, Some(256));
        let e = Config::from_gguf(&file("falcon", &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("falcon"), "{e}");
        let too_many = [
            ("expert_count", Value::U32(4)),
            ("expert_used_count", Value::U32(5)),
        ];
        let e = Config::from_gguf(&file("llama", &too_many))
            .unwrap_err()
            .to_string();
        assert!(e.contains("5 of 4 experts"), "{e}");
        let e = Config::from_gguf(&file("qwen2moe", &[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("expert_count"), "{e}");
        // Linear scaling and Phi-3's attention factor are read.
        let linear = [
            ("rope.scaling.type", Value::Str("linear".into())),
            ("rope.scaling.factor", Value::F32(4.0)),
            ("rope.scaling.attn_factor", Value::F32(1.5)),
        ];
        let c = Config::from_gguf(&file("llama", &linear)).unwrap();
        let absurd = [("rope.freq_base", Value::F32(1.0))];
        let e = Config::from_gguf(&file("llama", &absurd))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rope.freq_base"), "{e}");
        let negative = [
            ("rope.scaling.type", Value::Str("linear".into())),
            ("rope.scaling.factor", Value::F32(-2.0)),
        ];
        let e = Config::from_gguf(&file("llama", &negative))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rope.scaling.factor"), "{e}");
        assert_eq!(
            (c.rope_scaling.freq_scale, c.rope_scaling.attn_factor),
            (0.25, 1.5)
        );
    }
}
