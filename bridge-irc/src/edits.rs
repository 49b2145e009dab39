//! A Matrix edit as IRC users write one: `s/old words/new words/`, or `* corrected text`.
//!
//! IRC has no edits. Reposting a whole message for a typo floods the channel, so an edit
//! is one short line: the changed words as a substitution when that is shorter, or the
//! corrected text marked with `* `.

use std::collections::{HashMap, VecDeque};

/// How many messages' texts are kept for substitutions: edits are of recent messages.
const REMEMBERED: usize = 4096;

/// The longest text kept: one IRC line's worth.
const LONGEST_REMEMBERED: usize = 512;

/// The text last said on IRC for recent Matrix messages (by event id), for substitutions.
/// Kept in memory only: after a restart, an edit of an older message is a correction.
#[derive(Debug, Default)]
pub struct RecentTexts {
    texts: HashMap<String, String>,
    order: VecDeque<String>,
}

impl RecentTexts {
    /// Remembers `text` as what message `event_id` says now, forgetting the oldest.
    pub fn remember(&mut self, event_id: &str, text: &str) {
        // Only what a substitution can be made of: one line of IRC.
        if text.contains('\n') || text.len() > LONGEST_REMEMBERED {
            self.texts.remove(event_id);
            return;
        }
        if self
            .texts
            .insert(event_id.to_owned(), text.to_owned())
            .is_none()
        {
            self.order.push_back(event_id.to_owned());
        }
        while self.order.len() > REMEMBERED {
            if let Some(oldest) = self.order.pop_front() {
                self.texts.remove(&oldest);
            }
        }
    }

    /// What message `event_id` said last, if remembered.
    pub fn get(&self, event_id: &str) -> Option<&str> {
        self.texts.get(event_id).map(String::as_str)
    }
}

/// The substitution turning `old` into `new` (`s/teh/the/`), with the changed part
/// widened to whole words; `None` where it would not be shorter than `* new`, the texts
/// are equal, or either has several lines.
pub fn substitution(old: &str, new: &str) -> Option<String> {
    if old == new || old.contains('\n') || new.contains('\n') {
        return None;
    }
    let old_chars: Vec<char> = old.chars().collect();
    let new_chars: Vec<char> = new.chars().collect();
    let prefix = old_chars
        .iter()
        .zip(&new_chars)
        .take_while(|(a, b)| a == b)
        .count();
    let suffix = old_chars[prefix..]
        .iter()
        .rev()
        .zip(new_chars[prefix..].iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    // Widen to whole words: from the start of the word where the change begins to the end
    // of the word where it ends (the same in both texts, as the context is shared).
    let mut start = prefix;
    while start > 0 && !old_chars[start - 1].is_whitespace() {
        start -= 1;
    }
    let mut after = suffix;
    while after > 0 && !old_chars[old_chars.len() - after].is_whitespace() {
        after -= 1;
    }
    let from: String = old_chars[start..old_chars.len() - after].iter().collect();
    let to: String = new_chars[start..new_chars.len() - after].iter().collect();
    let (from, to) = (from.trim(), to.trim());
    // Readers apply it to the first match: it must name one place, and `/` would make it
    // unreadable.
    if from.is_empty() || old.matches(from).count() != 1 || from.contains('/') || to.contains('/') {
        return None;
    }
    let rendered = format!("s/{from}/{to}/");
    (rendered.chars().count() < new.chars().count() + 2).then_some(rendered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_becomes_a_substitution_of_its_word() {
        assert_eq!(
            substitution("I think teh build is green", "I think the build is green"),
            Some("s/teh/the/".to_owned())
        );
        assert_eq!(
            substitution("meet at 10 tomorrow", "meet at 11 tomorrow"),
            Some("s/10/11/".to_owned())
        );
        // Words dropped or added at the end, in the middle.
        assert_eq!(
            substitution(
                "it works on my machine today, I promise you all",
                "it works on my machine, I promise you all"
            ),
            Some("s/machine today,/machine,/".to_owned())
        );
        assert_eq!(
            substitution("see the docs first please", "see the new docs first please"),
            Some("s/docs/new docs/".to_owned())
        );
        assert_eq!(
            substitution("naïve café is here", "naïve cafe is here"),
            Some("s/café/cafe/".to_owned())
        );
    }

    #[test]
    fn only_recent_texts_are_remembered() {
        let mut texts = RecentTexts::default();
        for n in 0..=REMEMBERED {
            texts.remember(&format!("$e{n}"), "text");
        }
        texts.remember("$e1", "edited");
        assert_eq!(texts.get("$e0"), None);
        assert_eq!(texts.get("$e1"), Some("edited"));
        assert_eq!(texts.order.len(), REMEMBERED);
        texts.remember("$e1", "two\nlines");
        assert_eq!(texts.get("$e1"), None);
    }

    #[test]
    fn a_rewrite_stays_a_correction() {
        // Nothing shared: the substitution is longer than the new text.
        assert_eq!(substitution("hello", "goodbye"), None);
        assert_eq!(substitution("short", "short"), None);
        assert_eq!(substitution("one\ntwo", "one\nthree"), None);
        assert_eq!(substitution("", "new text"), None);
        // As long as the correction: the correction is clearer.
        assert_eq!(
            substitution("it works on my machine today", "it works on my machine"),
            None
        );
        // A word that occurs twice, or a slash: which one would be unclear.
        assert_eq!(
            substitution("the cat and the big dog", "the cat and a big dog"),
            None
        );
        assert_eq!(
            substitution("see a/b for details", "see a/c for details"),
            None
        );
        // Text added only at the start of an empty old word range.
        assert_eq!(substitution("a", "b a"), None);
    }
}
