//! Micro-benchmarks of the per-line hot path of ingest: parse, map, enrich, capture (that
//! is enrich and the id), ids alone (one by one and batched), serialize, and all of them together, over 50 lines made by
//! `genlog.py` (default "flat" style, seed 7). Run with `cargo bench --bench hot_path`;
//! the end-to-end numbers are in BENCHMARKS.md.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;
use training_collector::capture::{self, Identity};
use training_collector::config::Config;
use training_collector::enrich::Enricher;
use training_collector::mapping::{LineEvent, Mapper};

const SAMPLE: &str = include_str!("sample.jsonl");

fn interactions(mapper: &Mapper, lines: &[&[u8]]) -> Vec<capture::Interaction> {
    lines
        .iter()
        .map(|l| match mapper.map(l) {
            Ok(LineEvent::Interaction(it)) => *it,
            other => panic!("sample line is not an interaction: {other:?}"),
        })
        .collect()
}

fn hot_path(c: &mut Criterion) {
    let cfg = Config::default();
    let mapper = Mapper::new(&cfg.input);
    let enricher = Enricher::new(&cfg.domain);
    let lines: Vec<&[u8]> = SAMPLE.lines().map(str::as_bytes).collect();
    let bytes: u64 = lines.iter().map(|l| l.len() as u64 + 1).sum();
    let its = interactions(&mapper, &lines);
    let examples: Vec<_> = its
        .iter()
        .map(|it| {
            let id = Identity::RequestId(it.request_id.clone().unwrap_or_default());
            capture::capture(&enricher, &id, it.clone())
        })
        .collect();

    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("parse (serde_json::Value)", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(serde_json::from_slice::<Value>(l).unwrap());
            }
        })
    });
    g.bench_function("map (parse + JSON Pointers)", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(mapper.map(l).unwrap());
            }
        })
    });
    g.bench_function("enrich (keywords, tags, score)", |b| {
        b.iter(|| {
            for it in &its {
                black_box(enricher.enrich(&it.prompt, &it.response));
            }
        })
    });
    g.bench_function("capture (enrich + id)", |b| {
        b.iter(|| {
            for it in &its {
                let id = Identity::RequestId(it.request_id.clone().unwrap_or_default());
                black_box(capture::capture(&enricher, &id, it.clone()));
            }
        })
    });
    let identities: Vec<Identity> = its
        .iter()
        .map(|it| Identity::RequestId(it.request_id.clone().unwrap_or_default()))
        .collect();
    g.bench_function("ids one by one (example_id)", |b| {
        b.iter(|| {
            for (id, it) in identities.iter().zip(&its) {
                black_box(capture::example_id(
                    id,
                    it.timestamp,
                    &it.prompt,
                    &it.response,
                ));
            }
        })
    });
    g.bench_function("ids of a batch (example_ids, what ingest uses)", |b| {
        let pairs: Vec<(&Identity, &capture::Interaction)> = identities.iter().zip(&its).collect();
        b.iter(|| black_box(capture::example_ids(&pairs)))
    });
    g.bench_function("serialize (serde_json::to_vec)", |b| {
        b.iter(|| {
            for ex in &examples {
                black_box(serde_json::to_vec(ex).unwrap());
            }
        })
    });
    g.bench_function("serialize (write_json, what ingest uses)", |b| {
        b.iter(|| {
            for ex in &examples {
                let mut line = Vec::new();
                ex.write_json(&mut line);
                black_box(line);
            }
        })
    });
    g.bench_function("line (map + capture + serialize)", |b| {
        b.iter(|| {
            for l in &lines {
                let Ok(LineEvent::Interaction(it)) = mapper.map(l) else {
                    unreachable!()
                };
                let id = Identity::RequestId(it.request_id.clone().unwrap_or_default());
                let ex = capture::capture(&enricher, &id, *it);
                let mut line = Vec::new();
                ex.write_json(&mut line);
                black_box(line);
            }
        })
    });
    // What ingest's workers do with a job: map every line, hash the ids side by side, then
    // enrich and render each.
    g.bench_function(
        "lines as ingest (map, batched ids, capture, write_json)",
        |b| {
            b.iter(|| {
                let mapped: Vec<(Identity, capture::Interaction)> = lines
                    .iter()
                    .map(|l| {
                        let Ok(LineEvent::Interaction(it)) = mapper.map(l) else {
                            unreachable!()
                        };
                        let id = Identity::RequestId(it.request_id.clone().unwrap_or_default());
                        (id, *it)
                    })
                    .collect();
                let pairs: Vec<(&Identity, &capture::Interaction)> =
                    mapped.iter().map(|(id, it)| (id, it)).collect();
                let ids = capture::example_ids(&pairs);
                for ((_, it), id) in mapped.into_iter().zip(ids) {
                    let ex = capture::capture_with_id(&enricher, id, it);
                    let mut line = Vec::with_capacity(ex.prompt.len() + ex.response.len() + 1024);
                    ex.write_json(&mut line);
                    black_box(line);
                }
            })
        },
    );
    g.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
