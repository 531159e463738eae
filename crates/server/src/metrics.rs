//! `GET /metrics` in the Prometheus text format (prometheus-client). Engine-side figures
//! (running and waiting requests, KV usage, prefix-cache hits and queries, preemptions,
//! cancellations) are read from the engine at scrape time; request-side ones (prompt and
//! generated tokens, finished requests by reason, time to first token, time per output token,
//! end-to-end latency) are recorded by `reply` as requests end.
//!
//! The same figures are also exported under vLLM's names where the meaning is the same
//! (`vllm:num_requests_running`, `vllm:kv_cache_usage_perc`, `vllm:prefix_cache_queries_total`,
//! …, each labelled `model_name`), so dashboards and prefix-aware routers built for vLLM read
//! everett unchanged.

use everett_engine::engine::EngineStats;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelName {
    model_name: String,
}

/// The figures under vLLM's names (its registry has no prefix: the names carry `vllm:`).
struct Vllm {
    registry: Registry,
    label: ModelName,
    running: Family<ModelName, Gauge>,
    waiting: Family<ModelName, Gauge>,
    kv_usage: Family<ModelName, Gauge<f64, AtomicU64>>,
    prefix_queries: Family<ModelName, Counter>,
    prefix_hits: Family<ModelName, Counter>,
    preemptions: Family<ModelName, Counter>,
    ttft: Family<ModelName, Histogram, fn() -> Histogram>,
    itl: Family<ModelName, Histogram, fn() -> Histogram>,
    e2e: Family<ModelName, Histogram, fn() -> Histogram>,
}

// Bucket layouts (first bound, doublings) shared with the `everett_` histograms.
fn ttft_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}
fn gap_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}
fn e2e_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 14))
}

impl Vllm {
    fn new(model_name: &str) -> Self {
        let mut v = Self {
            registry: Registry::default(),
            label: ModelName {
                model_name: model_name.to_string(),
            },
            running: Family::default(),
            waiting: Family::default(),
            kv_usage: Family::default(),
            prefix_queries: Family::default(),
            prefix_hits: Family::default(),
            preemptions: Family::default(),
            ttft: Family::new_with_constructor(ttft_buckets),
            itl: Family::new_with_constructor(gap_buckets),
            e2e: Family::new_with_constructor(e2e_buckets),
        };
        let r = &mut v.registry;
        r.register(
            "vllm:num_requests_running",
            "Requests in model execution batches",
            v.running.clone(),
        );
        r.register(
            "vllm:num_requests_waiting",
            "Requests waiting to be processed",
            v.waiting.clone(),
        );
        r.register(
            "vllm:kv_cache_usage_perc",
            "KV-cache usage; 1 means 100 percent",
            v.kv_usage.clone(),
        );
        r.register(
            "vllm:prefix_cache_queries",
            "Prefix cache queries, in tokens",
            v.prefix_queries.clone(),
        );
        r.register(
            "vllm:prefix_cache_hits",
            "Prefix cache hits, in tokens",
            v.prefix_hits.clone(),
        );
        r.register(
            "vllm:num_preemptions",
            "Cumulative number of preemptions",
            v.preemptions.clone(),
        );
        r.register(
            "vllm:time_to_first_token_seconds",
            "Time to first token in seconds",
            v.ttft.clone(),
        );
        r.register(
            "vllm:inter_token_latency_seconds",
            "Inter-token latency in seconds",
            v.itl.clone(),
        );
        r.register(
            "vllm:e2e_request_latency_seconds",
            "End-to-end request latency in seconds",
            v.e2e.clone(),
        );
        v
    }
}

pub struct Metrics {
    registry: Registry,
    vllm: Vllm,
    restarts: Counter,
    running: Gauge,
    waiting: Gauge,
    kv_usage: Gauge<f64, AtomicU64>,
    prefix_hits: Counter,
    prefix_queries: Counter,
    preemptions: Counter,
    cancelled: Counter,
    prompt_tokens: Counter,
    generation_tokens: Counter,
    finished: Family<Reason, Counter>,
    ttft: Histogram,
    tpot: Histogram,
    e2e: Histogram,
}

/// How one request went, for `Metrics::record`.
pub struct Outcome<'a> {
    pub prompt_tokens: usize,
    pub generated: usize,
    /// Seconds from submission to the first token, and to the end.
    pub ttft: Option<f64>,
    pub e2e: f64,
    /// One reason per choice ("stop", "length", "abort").
    pub reasons: &'a [&'a str],
}

impl Metrics {
    /// The registry of a server whose clients call the model `model_name`.
    pub fn new(model_name: &str) -> Self {
        let mut registry = Registry::with_prefix("everett");
        let m = Self {
            vllm: Vllm::new(model_name),
            restarts: Counter::default(),
            running: Gauge::default(),
            waiting: Gauge::default(),
            kv_usage: Gauge::default(),
            prefix_hits: Counter::default(),
            prefix_queries: Counter::default(),
            preemptions: Counter::default(),
            cancelled: Counter::default(),
            prompt_tokens: Counter::default(),
            generation_tokens: Counter::default(),
            finished: Family::default(),
            ttft: ttft_buckets(),
            tpot: gap_buckets(),
            e2e: e2e_buckets(),
            registry: Registry::default(),
        };
        registry.register(
            "requests_running",
            "Requests being computed",
            m.running.clone(),
        );
        registry.register(
            "requests_waiting",
            "Requests waiting for admission",
            m.waiting.clone(),
        );
        registry.register(
            "kv_usage_ratio",
            "Share of KV blocks referenced",
            m.kv_usage.clone(),
        );
        registry.register(
            "prefix_cache_hit_tokens",
            "Prompt tokens served from the prefix cache",
            m.prefix_hits.clone(),
        );
        registry.register(
            "prefix_cache_query_tokens",
            "Prompt tokens looked up in the prefix cache",
            m.prefix_queries.clone(),
        );
        registry.register(
            "preemptions",
            "Requests preempted for lack of KV blocks",
            m.preemptions.clone(),
        );
        registry.register(
            "engine_restarts",
            "Times the engine was rebuilt after a fault",
            m.restarts.clone(),
        );
        registry.register(
            "cancelled_requests",
            "Requests cancelled by their client",
            m.cancelled.clone(),
        );
        registry.register(
            "prompt_tokens",
            "Prompt tokens of finished requests",
            m.prompt_tokens.clone(),
        );
        registry.register(
            "generation_tokens",
            "Generated tokens of finished requests",
            m.generation_tokens.clone(),
        );
        registry.register(
            "requests_finished",
            "Finished choices by reason",
            m.finished.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "Submission to first token",
            m.ttft.clone(),
        );
        registry.register(
            "time_per_output_token_seconds",
            "Mean gap between a request's tokens",
            m.tpot.clone(),
        );
        registry.register(
            "e2e_request_latency_seconds",
            "Submission to last token",
            m.e2e.clone(),
        );
        Self { registry, ..m }
    }
}

/// Brings a counter up to an engine total.
fn catch_up(c: &Counter, total: u64) {
    c.inc_by(total.saturating_sub(c.get()));
}

impl Metrics {
    /// The text exposition, after reading the engine's figures.
    pub fn render(&self, s: &EngineStats) -> String {
        self.running.set(s.running as i64);
        self.waiting.set(s.waiting as i64);
        self.kv_usage
            .set(s.used_blocks as f64 / s.capacity_blocks.max(1) as f64);
        catch_up(&self.prefix_hits, s.prefix.hit_tokens);
        catch_up(&self.prefix_queries, s.prefix.queried_tokens);
        catch_up(&self.preemptions, s.scheduler.preemptions);
        catch_up(&self.cancelled, s.cancelled);
        catch_up(&self.restarts, s.restarts);
        let v = &self.vllm;
        let l = &v.label;
        v.running.get_or_create(l).set(s.running as i64);
        v.waiting.get_or_create(l).set(s.waiting as i64);
        v.kv_usage.get_or_create(l).set(self.kv_usage.get());
        catch_up(&v.prefix_queries.get_or_create(l), s.prefix.queried_tokens);
        catch_up(&v.prefix_hits.get_or_create(l), s.prefix.hit_tokens);
        catch_up(&v.preemptions.get_or_create(l), s.scheduler.preemptions);
        let mut out = String::new();
        // Writing into a String cannot fail. Each registry ends with `# EOF`; only the last may.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        let _ = prometheus_client::encoding::text::encode(&mut out, &v.registry);
        out
    }

    /// The gap before a token (or before the first of several that came at once, the others
    /// then counting 0), as vLLM's inter-token latency.
    pub fn token_gap(&self, seconds: f64, tokens: usize) {
        let h = self.vllm.itl.get_or_create(&self.vllm.label);
        h.observe(seconds);
        (1..tokens).for_each(|_| h.observe(0.0));
    }

    pub fn record(&self, o: &Outcome) {
        self.prompt_tokens.inc_by(o.prompt_tokens as u64);
        self.generation_tokens.inc_by(o.generated as u64);
        for r in o.reasons {
            let label = Reason {
                reason: r.to_string(),
            };
            self.finished.get_or_create(&label).inc();
        }
        let l = &self.vllm.label;
        self.vllm.e2e.get_or_create(l).observe(o.e2e);
        if let Some(t) = o.ttft {
            self.ttft.observe(t);
            self.vllm.ttft.get_or_create(l).observe(t);
            if o.generated > 1 {
                self.tpot.observe((o.e2e - t) / (o.generated - 1) as f64);
            }
        }
        self.e2e.observe(o.e2e);
    }
}
