//! Micro-benchmarks of export's per-example work on the read path: reading an example line,
//! MinHash band keys, normalization and PII scrubbing, over the 50 lines of
//! `benches/sample.jsonl` (made by `genlog.py`), captured as ingest captures them. Run with `cargo bench --bench export_path`;
//! the end-to-end numbers are in BENCHMARKS.md.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use training_collector::capture::{self, Identity};
use training_collector::config::Config;
use training_collector::enrich::Enricher;
use training_collector::export::{self, dedup, pii};
use training_collector::mapping::{LineEvent, Mapper};

const SAMPLE: &str = include_str!("sample.jsonl");

fn export_path(c: &mut Criterion) {
    let cfg = Config::default();
    let mapper = Mapper::new(&cfg.input);
    let texts: Vec<(String, String)> = SAMPLE
        .lines()
        .map(|l| match mapper.map(l.as_bytes()) {
            Ok(LineEvent::Interaction(it)) => (it.prompt, it.response),
            other => panic!("sample line is not an interaction: {other:?}"),
        })
        .collect();
    let bytes: u64 = texts.iter().map(|(p, r)| (p.len() + r.len()) as u64).sum();
    let (bands, rows) = dedup::lsh_params(dedup::DEFAULT_NEAR_DUP_THRESHOLD);
    let scrubber = pii::Scrubber::new(&[], b"key");

    // The same interactions as example lines of a segment.
    let enricher = Enricher::new(&cfg.domain);
    let example_lines: Vec<Vec<u8>> = SAMPLE
        .lines()
        .map(|l| {
            let Ok(LineEvent::Interaction(it)) = mapper.map(l.as_bytes()) else {
                panic!("sample line is not an interaction");
            };
            let id = Identity::RequestId(it.request_id.clone().unwrap_or_default());
            let mut line = Vec::new();
            capture::capture(&enricher, &id, *it).write_json(&mut line);
            line
        })
        .collect();
    let line_bytes: u64 = example_lines.iter().map(|l| l.len() as u64).sum();

    let mut g = c.benchmark_group("export_path");
    g.throughput(Throughput::Bytes(line_bytes));
    for (name, serde_only) in [
        ("read example line (as export does)", false),
        ("read example line (serde, as before line_layout)", true),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                for l in &example_lines {
                    black_box(export::bench_read_line(l, serde_only).unwrap());
                }
            })
        });
    }
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("band keys (MinHash, 11 x 11)", |b| {
        let mut m = dedup::MinHasher::new(bands, rows);
        b.iter(|| {
            for (p, r) in &texts {
                black_box(m.band_hashes(&[p, r], 0));
            }
        })
    });
    g.bench_function("normalize (prompt and response)", |b| {
        let mut buf = String::new();
        b.iter(|| {
            for (p, r) in &texts {
                dedup::normalize_into(p, &mut buf);
                black_box(&buf);
                dedup::normalize_into(r, &mut buf);
                black_box(&buf);
            }
        })
    });
    g.bench_function("scrub (PII, prompt and response)", |b| {
        b.iter(|| {
            for (p, r) in &texts {
                black_box(scrubber.scrub_cow(p, Some("user_17")));
                black_box(scrubber.scrub_cow(r, Some("user_17")));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, export_path);
criterion_main!(benches);
