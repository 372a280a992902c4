//! The keyword automaton run over one text as several interleaved streams.
//!
//! A DFA scan is a chain of dependent loads: the next state needs the current one, so one
//! stream runs at the cache's load latency (about 8 cycles a byte here, 15% of ingest), not
//! at the CPU's throughput. The text is cut into `N` parts and each part is scanned by its
//! own state in the same loop; the chains are independent and the CPU overlaps them. Each
//! part but the last runs on for `max_pattern_len - 1` bytes past its end, so an occurrence
//! that straddles a cut is still found (by the part it starts in); an occurrence inside an
//! overlap may be reported twice, which the caller's "found" set absorbs.
//!
//! Occurrences are the automaton's overlapping matches (every pattern at every end
//! position, `MatchKind::Standard`); the tests compare them with `aho-corasick`'s own
//! overlapping iterator.

use aho_corasick::automaton::Automaton;
use aho_corasick::dfa::DFA;
use aho_corasick::{Anchored, MatchKind};

/// Texts shorter than this are scanned as one stream (the cuts would cost more than they
/// save).
const MIN_SPLIT_LEN: usize = 256;

/// Builds the DFA [`for_each_occurrence`] runs: standard (overlapping) semantics, no
/// prefilter (its start-state handling would make every start state "special").
pub(super) fn build(patterns: &[String]) -> DFA {
    aho_corasick::dfa::Builder::new()
        .match_kind(MatchKind::Standard)
        .prefilter(false)
        .build(patterns)
        .expect("keyword automaton: patterns are plain strings")
}

/// Calls `found(pattern, start, end)` for every occurrence of every pattern in `text`
/// (possibly more than once for one occurrence).
pub(super) fn for_each_occurrence(
    dfa: &DFA,
    text: &[u8],
    mut found: impl FnMut(usize, usize, usize),
) {
    if dfa.patterns_len() == 0 {
        return;
    }
    if text.len() < MIN_SPLIT_LEN {
        scan::<1>(dfa, text, &mut found);
    } else {
        scan::<4>(dfa, text, &mut found);
    }
}

fn scan<const N: usize>(dfa: &DFA, text: &[u8], found: &mut impl FnMut(usize, usize, usize)) {
    let start = dfa
        .start_state(Anchored::No)
        .expect("the DFA is built for unanchored searches");
    let part = text.len() / N;
    let overlap = dfa.max_pattern_len().saturating_sub(1);
    let mut from = [0usize; N];
    let mut to = [0usize; N];
    for k in 0..N {
        from[k] = k * part;
        to[k] = if k == N - 1 {
            text.len()
        } else {
            ((k + 1) * part + overlap).min(text.len())
        };
    }
    let common = (0..N).map(|k| to[k] - from[k]).min().unwrap_or(0);
    let mut state = [start; N];
    for i in 0..common {
        for k in 0..N {
            let at = from[k] + i;
            state[k] = dfa.next_state(Anchored::No, state[k], text[at]);
            if dfa.is_special(state[k]) {
                report(dfa, state[k], at + 1, found);
            }
        }
    }
    for k in 0..N {
        let mut s = state[k];
        for (at, &b) in text.iter().enumerate().take(to[k]).skip(from[k] + common) {
            s = dfa.next_state(Anchored::No, s, b);
            if dfa.is_special(s) {
                report(dfa, s, at + 1, found);
            }
        }
    }
}

/// Out of line on purpose: matches are rare next to bytes, and inlining this into the
/// four-stream loop made enrich ~40% slower (104 -> 147 µs per 50 lines, measured).
#[inline(never)]
fn report(
    dfa: &DFA,
    state: aho_corasick::automaton::StateID,
    end: usize,
    found: &mut impl FnMut(usize, usize, usize),
) {
    if !dfa.is_match(state) {
        return;
    }
    for i in 0..dfa.match_len(state) {
        let p = dfa.match_pattern(state, i);
        found(p.as_usize(), end - dfa.pattern_len(p), end);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aho_corasick::AhoCorasick;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn occurrences(patterns: &[String], text: &str) -> BTreeSet<(usize, usize, usize)> {
        let mut out = BTreeSet::new();
        for_each_occurrence(&build(patterns), text.as_bytes(), |p, s, e| {
            out.insert((p, s, e));
        });
        out
    }

    fn reference(patterns: &[String], text: &str) -> BTreeSet<(usize, usize, usize)> {
        let ac = AhoCorasick::new(patterns).unwrap();
        ac.find_overlapping_iter(text)
            .map(|m| (m.pattern().as_usize(), m.start(), m.end()))
            .collect()
    }

    #[test]
    fn an_occurrence_across_every_cut_is_found() {
        // 1,000 bytes cut in four parts of 250: the longest pattern starts one byte before
        // each cut, so only the part before it, running on for `max_pattern_len - 1` bytes,
        // can see it whole.
        let mut text = "x".repeat(1000);
        for cut in [250, 500, 750] {
            text.replace_range(cut - 1..cut + 5, "abcdef");
        }
        let patterns = vec!["abcdef".to_string(), "cd".to_string()];
        let got = occurrences(&patterns, &text);
        assert_eq!(got, reference(&patterns, &text));
        assert_eq!(got.len(), 6);
    }

    proptest! {
        #[test]
        fn finds_what_the_overlapping_iterator_finds(
            patterns in proptest::collection::vec("[abc][abc ]{0,6}", 1..10),
            text in "[abcd ]{0,700}",
        ) {
            prop_assert_eq!(occurrences(&patterns, &text), reference(&patterns, &text));
        }
    }
}
