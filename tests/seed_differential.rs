//! Differential test against the seed: in `substring` mode the Rust enrichment must give
//! exactly what the original Python `TrainingCollector` computes (relevance, auto_score to
//! 2 decimals, tags and token counts) for generated interactions and hand-picked edge cases.

mod support;

use serde_json::Value;
use training_collector::config::{DomainConfig, MatchMode};
use training_collector::enrich::{token_count, Enricher};

fn pairs() -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = support::genlog(1200, 11, &[])
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "interaction")
        .map(|v| {
            (
                v["query"].as_str().unwrap().to_string(),
                v["response"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        pairs.len() >= 1000,
        "only {} generated interactions",
        pairs.len()
    );
    // The seed's own quick-start examples and edge cases of matching and counting.
    for (p, r) in [
        ("What's TPO production rate?", "About 10-12 squares per crew day for mechanically attached TPO."),
        ("What's the seam overlap for TPO?", "2 inches minimum"),
        (
            "What's the seam overlap for TPO?",
            "2.5 inches minimum per most manufacturers. Carlisle requires 2.5\", Firestone 3\". Always check approved submittal.",
        ),
        ("Tighten the screw and follow the steps", "Apply primer, burnish the seams."),
        ("ROOF DRAIN near the SCUPPER?", "Overflow drains, crickets and tapered polyiso."),
        ("Café façade with EPDM", "Ñandú naïve résumé — Johns Manville\u{a0}base flash"),
        ("", ""),
        ("   ", "\t\n"),
        ("07 52", "07 500 and 07 62"),
        ("a\u{1c}b\u{1f}c d e", "x"),
        ("T&M extra work on the PCO", "Change order for built-up tar and gravel"),
    ] {
        pairs.push((p.to_string(), r.to_string()));
    }
    pairs
}

#[test]
fn substring_mode_matches_the_seed_exactly() {
    let pairs = pairs();
    let oracle = support::seed_oracle(&pairs, &[]);
    assert_eq!(oracle.len(), pairs.len());

    let enricher = Enricher::new(&DomainConfig {
        match_mode: MatchMode::Substring,
        ..DomainConfig::default()
    });
    let mut differences = Vec::new();
    for ((p, r), want) in pairs.iter().zip(&oracle) {
        let got = enricher.enrich(p, r);
        let got = serde_json::json!({
            "relevance": got.relevance.as_str(),
            "auto_score": got.auto_score,
            "tags": got.tags,
            "prompt_tokens": token_count(p),
            "response_tokens": token_count(r),
        });
        if &got != want {
            differences.push(format!("{p:?} / {r:?}\n  seed: {want}\n  rust: {got}"));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} differ from the seed:\n{}",
        differences.len(),
        pairs.len(),
        differences[..differences.len().min(5)].join("\n")
    );
}

#[test]
fn word_mode_differs_from_the_seed_only_where_substrings_were_false_positives() {
    let word = Enricher::new(&DomainConfig::default());
    let sub = Enricher::new(&DomainConfig {
        match_mode: MatchMode::Substring,
        ..DomainConfig::default()
    });
    for (p, r) in pairs() {
        let w = word.enrich(&p, &r);
        let s = sub.enrich(&p, &r);
        // Word matches are a subset of substring matches, so relevance can only drop.
        assert!(w.relevance <= s.relevance, "{p:?}");
        for t in &w.tags {
            assert!(
                t == "general" || s.tags.contains(t),
                "{t} in word mode only: {p:?}"
            );
        }
    }
}
