//! Enrichment: domain relevance, the seed's auto score and auto tags for a prompt/response
//! pair, with every keyword and tag pattern found in one pass over the text.
//!
//! All keyword lists and tag patterns are compiled into a single Aho-Corasick automaton; one
//! overlapping scan of the text finds every occurrence, and each occurrence is kept or
//! dropped by the match mode:
//! - `substring` reproduces the seed exactly (`kw in text.lower()`), defects included
//!   ("crew" in "screw");
//! - `word` (the default) keeps a match only when it starts at a word boundary and ends at
//!   one, or ends before one inflection suffix (s, es, d, ed, ing, er, ers) that is itself
//!   followed by a boundary: "drains" matches "drain", "screw" no longer matches "crew".

mod streams;

use crate::config::{DomainConfig, MatchMode};
use crate::record::Relevance;
use std::borrow::Cow;

/// Inflection suffixes a word-mode keyword may carry.
const SUFFIXES: &[&str] = &["s", "es", "d", "ed", "ing", "er", "ers"];

/// What one pattern string counts towards (a pattern may be a keyword and a tag pattern).
#[derive(Debug, Clone, Default)]
struct PatternUse {
    high: Option<usize>,
    medium: Option<usize>,
    tags: Vec<usize>,
}

/// The result of enriching one prompt/response pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrichment {
    pub relevance: Relevance,
    pub auto_score: f64,
    pub tags: Vec<String>,
    /// [`token_count`] of the prompt and of the response (the score needs them anyway).
    pub prompt_tokens: usize,
    pub response_tokens: usize,
}

/// The compiled keyword and tag matcher for one `[domain]` configuration.
#[derive(Debug, Clone)]
pub struct Enricher {
    mode: MatchMode,
    automaton: aho_corasick::dfa::DFA,
    uses: Vec<PatternUse>,
    /// Per pattern: whether its first / last char is a word char (word-mode boundaries
    /// only apply on sides where the pattern itself has a word char).
    word_edges: Vec<(bool, bool)>,
    high_count: usize,
    medium_count: usize,
    tag_names: Vec<String>,
}

impl Enricher {
    pub fn new(domain: &DomainConfig) -> Enricher {
        let mut patterns: Vec<String> = Vec::new();
        let mut uses: Vec<PatternUse> = Vec::new();
        let mut index = std::collections::HashMap::<String, usize>::new();
        let mut slot = |p: &str, patterns: &mut Vec<String>, uses: &mut Vec<PatternUse>| {
            let key = p.to_lowercase();
            *index.entry(key.clone()).or_insert_with(|| {
                patterns.push(key);
                uses.push(PatternUse::default());
                patterns.len() - 1
            })
        };
        for (i, kw) in domain.high.iter().enumerate() {
            let s = slot(kw, &mut patterns, &mut uses);
            uses[s].high = Some(i);
        }
        for (i, kw) in domain.medium.iter().enumerate() {
            let s = slot(kw, &mut patterns, &mut uses);
            uses[s].medium = Some(i);
        }
        let mut tag_names = Vec::new();
        for (t, (tag, pats)) in domain.tags.iter().enumerate() {
            tag_names.push(tag.clone());
            for p in pats {
                let s = slot(p, &mut patterns, &mut uses);
                if !uses[s].tags.contains(&t) {
                    uses[s].tags.push(t);
                }
            }
        }
        let word_edges = patterns
            .iter()
            .map(|p| {
                let first = p.chars().next().is_some_and(is_word_char);
                let last = p.chars().next_back().is_some_and(is_word_char);
                (first, last)
            })
            .collect();
        // A full DFA: the overlapping scan of every example's text is the hottest loop of
        // ingest, and the default (noncontiguous NFA here) was 5x slower on it.
        let automaton = streams::build(&patterns);
        Enricher {
            mode: domain.match_mode,
            automaton,
            uses,
            word_edges,
            high_count: domain.high.len(),
            medium_count: domain.medium.len(),
            tag_names,
        }
    }

    /// Relevance, score and tags of a prompt/response pair (seed `capture`).
    pub fn enrich(&self, prompt: &str, response: &str) -> Enrichment {
        let hits = self.scan(prompt, response);
        let relevance = hits.relevance();
        let (prompt_tokens, response_tokens) = (token_count(prompt), token_count(response));
        Enrichment {
            relevance,
            auto_score: score_of(prompt_tokens, response_tokens, relevance),
            tags: self.tags_of(&hits),
            prompt_tokens,
            response_tokens,
        }
    }

    /// Seed `_assess_relevance`.
    pub fn relevance(&self, prompt: &str, response: &str) -> Relevance {
        self.scan(prompt, response).relevance()
    }

    /// Seed `_auto_tag`: every tag one of whose patterns occurs, in config order, or
    /// `["general"]`.
    pub fn auto_tags(&self, prompt: &str, response: &str) -> Vec<String> {
        let hits = self.scan(prompt, response);
        self.tags_of(&hits)
    }

    fn tags_of(&self, hits: &Hits) -> Vec<String> {
        let tags: Vec<String> = hits
            .tags
            .iter()
            .enumerate()
            .filter(|(_, hit)| **hit)
            .map(|(i, _)| self.tag_names[i].clone())
            .collect();
        if tags.is_empty() {
            vec!["general".to_string()]
        } else {
            tags
        }
    }

    /// One pass over `f"{prompt} {response}".lower()` marking every keyword and tag hit.
    fn scan(&self, prompt: &str, response: &str) -> Hits {
        let text = joined_lowercase(prompt, response);
        let text = text.as_str();
        let bytes = text.as_bytes();
        let mut found = vec![false; self.uses.len()];
        streams::for_each_occurrence(&self.automaton, bytes, |p, start, end| {
            if found[p] {
                return;
            }
            if self.mode == MatchMode::Word && !self.at_word_edges(bytes, text, p, start, end) {
                return;
            }
            found[p] = true;
        });
        let mut hits = Hits {
            high: vec![false; self.high_count],
            medium: vec![false; self.medium_count],
            tags: vec![false; self.tag_names.len()],
        };
        for (p, use_) in self.uses.iter().enumerate() {
            if !found[p] {
                continue;
            }
            if let Some(i) = use_.high {
                hits.high[i] = true;
            }
            if let Some(i) = use_.medium {
                hits.medium[i] = true;
            }
            for &t in &use_.tags {
                hits.tags[t] = true;
            }
        }
        hits
    }

    fn at_word_edges(&self, bytes: &[u8], text: &str, p: usize, start: usize, end: usize) -> bool {
        let (first_word, last_word) = self.word_edges[p];
        if first_word && text[..start].chars().next_back().is_some_and(is_word_char) {
            return false;
        }
        if !last_word || boundary_at(text, end) {
            return true;
        }
        SUFFIXES.iter().any(|suf| {
            bytes[end..].starts_with(suf.as_bytes()) && boundary_at(text, end + suf.len())
        })
    }
}

/// Which keywords (by list index) and tags were found.
struct Hits {
    high: Vec<bool>,
    medium: Vec<bool>,
    tags: Vec<bool>,
}

impl Hits {
    /// Seed thresholds: 3+ high -> high; 1+ high or 3+ medium -> medium; else low.
    fn relevance(&self) -> Relevance {
        let high = self.high.iter().filter(|h| **h).count();
        if high >= 3 {
            return Relevance::High;
        }
        let medium = self.medium.iter().filter(|h| **h).count();
        if high >= 1 || medium >= 3 {
            Relevance::Medium
        } else {
            Relevance::Low
        }
    }
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// True when no word char starts at byte `i` of `text`.
fn boundary_at(text: &str, i: usize) -> bool {
    !text[i..].chars().next().is_some_and(is_word_char)
}

/// `f"{prompt} {response}".lower()`, built in one copy when both are ASCII.
fn joined_lowercase(prompt: &str, response: &str) -> String {
    if prompt.is_ascii() && response.is_ascii() {
        let mut out = Vec::with_capacity(prompt.len() + response.len() + 1);
        out.extend(prompt.bytes().map(|b| b.to_ascii_lowercase()));
        out.push(b' ');
        out.extend(response.bytes().map(|b| b.to_ascii_lowercase()));
        return String::from_utf8(out).expect("ASCII stays valid UTF-8");
    }
    lowercase(&format!("{prompt} {response}")).into_owned()
}

/// Python's `str.lower()`: ASCII text is lowered cheaply, anything else by Unicode rules.
fn lowercase(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

/// Python's `str.split()` word count: runs of Unicode whitespace, plus the four ASCII
/// separator controls (0x1C..0x1F) that Python also treats as whitespace.
///
/// ```
/// use training_collector::enrich::token_count;
/// assert_eq!(token_count("  TPO  seam\toverlap\n"), 3);
/// assert_eq!(token_count("a\u{1c}b"), 2);
/// ```
pub fn token_count(s: &str) -> usize {
    if s.is_ascii() {
        return ascii_token_count(s.as_bytes());
    }
    s.split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .filter(|w| !w.is_empty())
        .count()
}

/// The ASCII case of [`token_count`]: a word starts at every non-space byte that follows a
/// space byte (or starts the text). Written as a sum over adjacent byte pairs with no
/// loop-carried state, which the compiler vectorizes.
fn ascii_token_count(b: &[u8]) -> usize {
    #[inline(always)]
    fn space(b: u8) -> bool {
        (b.wrapping_sub(b'\t') < 5) | (b == b' ') | (b.wrapping_sub(0x1c) < 4)
    }
    let Some(&first) = b.first() else { return 0 };
    let mut n = usize::from(!space(first));
    // Byte-wide partial sums over blocks of 128 pairs: 16 pairs per vector step, and a block
    // cannot overflow a byte (u32 sums took 8 pairs a step and were 4% of ingest).
    for (prev, next) in b.chunks(128).zip(b[1..].chunks(128)) {
        n += usize::from(
            prev.iter()
                .zip(next)
                .map(|(&a, &c)| u8::from(space(a) & !space(c)))
                .sum::<u8>(),
        );
    }
    n
}

/// Seed `_calculate_quality_score`, rounded to 2 decimals.
pub fn auto_score(prompt: &str, response: &str, relevance: Relevance) -> f64 {
    score_of(token_count(prompt), token_count(response), relevance)
}

fn score_of(prompt_len: usize, response_len: usize, relevance: Relevance) -> f64 {
    let mut score: f64 = 0.5;
    if prompt_len >= 5 {
        score += 0.1;
    }
    if response_len >= 20 {
        score += 0.1;
    }
    if response_len >= 50 {
        score += 0.1;
    }
    score += match relevance {
        Relevance::High => 0.2,
        Relevance::Medium => 0.1,
        Relevance::Low => 0.0,
    };
    round2(score.min(1.0))
}

/// Rounds to 2 decimals (the precision `auto_score` is stored with).
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enricher(mode: MatchMode) -> Enricher {
        let domain = DomainConfig {
            match_mode: mode,
            ..DomainConfig::default()
        };
        Enricher::new(&domain)
    }

    fn tags(e: &Enricher, text: &str) -> Vec<String> {
        e.auto_tags(text, "")
    }

    #[test]
    fn substring_mode_keeps_the_seed_false_positives() {
        let e = enricher(MatchMode::Substring);
        assert!(tags(&e, "tighten the screw").contains(&"labor".to_string()));
        assert!(tags(&e, "follow the steps").contains(&"insulation".to_string()));
        assert!(tags(&e, "apply primer").contains(&"mod-bit".to_string()));
        assert_eq!(e.relevance("burnish it", ""), Relevance::Medium); // "bur"
    }

    #[test]
    fn word_mode_drops_the_seed_false_positives() {
        let e = enricher(MatchMode::Word);
        assert_eq!(tags(&e, "tighten the screw"), vec!["general"]);
        assert_eq!(tags(&e, "follow the steps"), vec!["general"]);
        assert_eq!(tags(&e, "apply primer"), vec!["general"]);
        assert_eq!(e.relevance("burnish it", ""), Relevance::Low);
    }

    #[test]
    fn word_mode_still_matches_inflections() {
        let e = enricher(MatchMode::Word);
        assert!(tags(&e, "clean the drains").contains(&"drains".to_string()));
        assert!(e.enrich("weld the seams", "").relevance == Relevance::Low);
        // seam (medium) + weld + roof -> 3 medium keywords -> medium
        assert_eq!(
            e.relevance("welded seams on the roofs", ""),
            Relevance::Medium
        );
        assert!(tags(&e, "we estimated it").contains(&"estimating".to_string()));
        assert!(tags(&e, "new flashing").contains(&"flashing".to_string()));
        assert!(tags(&e, "flashed twice").contains(&"flashing".to_string()));
        assert!(tags(&e, "the crews").contains(&"labor".to_string()));
    }

    #[test]
    fn word_mode_handles_punctuation_and_multiword_keywords() {
        let e = enricher(MatchMode::Word);
        assert!(tags(&e, "(TPO)").contains(&"tpo".to_string()));
        assert!(tags(&e, "T&M ticket").contains(&"change-order".to_string()));
        assert!(tags(&e, "a built-up roof").contains(&"bur".to_string()));
        assert_eq!(e.relevance("TPO, EPDM and PVC", ""), Relevance::High);
        assert_eq!(e.relevance("section 07 500", ""), Relevance::Low);
    }

    #[test]
    fn keywords_match_across_case() {
        let e = enricher(MatchMode::Word);
        assert_eq!(e.relevance("CARLISLE Firestone gaf", ""), Relevance::High);
    }

    #[test]
    fn score_follows_the_seed_formula() {
        assert_eq!(auto_score("a b", "c", Relevance::Low), 0.5);
        let long = "w ".repeat(60);
        assert_eq!(
            auto_score("one two three four five", &long, Relevance::High),
            1.0
        );
        assert_eq!(
            auto_score("one two three four five", &long, Relevance::Medium),
            0.9
        );
        assert_eq!(auto_score("x", &"w ".repeat(20), Relevance::Low), 0.6);
    }

    #[test]
    fn token_count_splits_like_python() {
        assert_eq!(token_count("  a\tb\nc  "), 3);
        assert_eq!(token_count("a\u{1c}b\u{a0}c"), 3);
        assert_eq!(token_count(""), 0);
        // Long texts, with a word straddling the fast path's block boundaries.
        let long = "ab ".repeat(50_000) + "x";
        assert_eq!(token_count(&long), 50_001);
        let long = " ".repeat((1 << 16) - 1) + "word" + &" ".repeat(1 << 16) + "w";
        assert_eq!(token_count(&long), 2);
    }

    proptest! {
        #[test]
        fn ascii_fast_path_counts_like_the_unicode_split(s in "[ a-c\t\n\x0b\x0c\r\x1c-\x1f\x00-\x08]{0,300}") {
            let slow = s
                .split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
                .filter(|w| !w.is_empty())
                .count();
            prop_assert_eq!(token_count(&s), slow);
        }
    }

    proptest! {
        #[test]
        fn any_text_gives_a_score_in_range_and_tags(prompt in ".*", response in ".*") {
            for mode in [MatchMode::Word, MatchMode::Substring] {
                let e = enricher(mode);
                let r = e.enrich(&prompt, &response);
                prop_assert!((0.5..=1.0).contains(&r.auto_score));
                prop_assert!(!r.tags.is_empty());
            }
        }
    }
}
