//! `GET /metrics` in the Prometheus text format (prometheus-client). Engine-side figures
//! (running and waiting requests, KV usage, prefix-cache hits and queries, preemptions,
//! cancellations) are read from the engine at scrape time; request-side ones (prompt and
//! generated tokens, finished requests by reason, time to first token, time per output token,
//! end-to-end latency) are recorded by `reply` as requests end.

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

pub struct Metrics {
    registry: Registry,
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

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("everett");
        let m = Self {
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
            ttft: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            tpot: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            e2e: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
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
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
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
        if let Some(t) = o.ttft {
            self.ttft.observe(t);
            if o.generated > 1 {
                self.tpot.observe((o.e2e - t) / (o.generated - 1) as f64);
            }
        }
        self.e2e.observe(o.e2e);
    }
}
