//! Splitting a message into IRC lines.
//!
//! This module owns the byte budget of an IRC line and the cutting of a
//! message body into payloads that fit it: one payload per line of the body,
//! long lines cut at a space or, failing that, at a character boundary. It
//! also guarantees that no payload carries CR, LF or NUL, the characters that
//! would end the IRC line early and let the rest be read as a command.
//!
//! IRC clients reset formatting at the start of every message, so when a
//! line is cut while mIRC formatting is on, the next payload starts with the
//! codes that were in force.

/// The most bytes an IRC line may have, CR LF included (RFC 1459 §2.3,
/// RFC 2812 §2.3), not counting IRCv3 message tags.
pub const MAX_LINE_BYTES: usize = 512;

/// Only a space this far into the room of a payload, or further, is worth
/// cutting at: cutting earlier would waste more than ~40% of the payload.
const SPACE_SEARCH_NUMERATOR: usize = 3;
const SPACE_SEARCH_DENOMINATOR: usize = 5;

use crate::formatting::{
    BOLD, COLOR, HEX_COLOR, ITALIC, MONOSPACE, RESET, REVERSE, STRIKETHROUGH, UNDERLINE,
    color_params_len,
};

/// The toggles whose state is carried over, in the order they are re-applied.
const TOGGLES: [u8; 6] = [BOLD, ITALIC, UNDERLINE, STRIKETHROUGH, MONOSPACE, REVERSE];

/// An empty bold pair, a no-op in every client, put between a re-applied
/// colour code and text that would otherwise be read as part of it.
const COLOR_GUARD: &str = "\x02\x02";

/// Makes `text` safe as the text of one IRC line: each line break (`\r\n`,
/// `\n` or `\r`) becomes a space and NUL is removed.
///
/// Use this where a value must stay on one line (a topic, a part reason);
/// a message body should go through [`split_message`] instead, which keeps
/// its lines apart. NUL is removed rather than replaced because it never
/// separates words, while a line break does.
pub fn sanitize_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\0' => {}
            '\r' => {
                // CR LF is one line break, so one space.
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push(' ');
            }
            '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Bytes left for the text of a `PRIVMSG` or `NOTICE` within the 512 bytes
/// of an IRC line.
///
/// The line that recipients get is `<prefix><command_and_target> :<text>\r\n`,
/// so the result is
///
/// ```text
/// 512 - prefix_len - command_and_target.len() - 2 (" :") - 2 ("\r\n")
/// ```
///
/// and 0 if nothing is left.
///
/// - `prefix_len` is the length of the prefix *including* its leading `:`
///   and trailing space, `:nick!user@host `. The client does not send it, but
///   the server puts it in front of the line it relays, and the relayed line
///   must fit in 512 bytes too or it is cut. Pass the longest the prefix can
///   be: the server may show a host (a cloak) other than the one the
///   connection knows.
/// - `tags_len` does not count. IRCv3 message tags (`@…` before the prefix)
///   have a budget of their own, outside the 512 bytes of the rest of the
///   line: 4096 bytes (`@` and trailing space included) for the tags a client
///   sends, 8191 for all the tags of a relayed line. Neither the tags the
///   bridge sends nor those the server adds take room from the text. The
///   parameter is there so that callers state what they send, and so that a
///   stricter rule could be applied here in one place if a server turned out
///   to count them.
/// - `command_and_target` is what stands between the prefix and the text,
///   such as `PRIVMSG #channel`.
///
/// A CTCP `ACTION` wraps the text in `\x01ACTION ` and `\x01`: subtract
/// those 9 bytes from the result.
pub fn payload_limit(prefix_len: usize, tags_len: usize, command_and_target: &str) -> usize {
    let _ = tags_len;
    let framing = " :".len() + "\r\n".len();
    let used = prefix_len
        .saturating_add(command_and_target.len())
        .saturating_add(framing);
    MAX_LINE_BYTES.saturating_sub(used)
}

/// Splits a message body (already formatted as IRC text) into payloads of at
/// most `max_payload_bytes` bytes of UTF-8 each, in order.
///
/// The body is first split into lines at each `\r\n`, `\n` or `\r`; blank
/// lines (empty, or only spaces and formatting codes) are dropped because IRC
/// cannot send an empty message. A line too long for one payload is cut at
/// its last space before the limit when that space is in the last ~40% of the
/// payload, dropping the spaces at the cut; otherwise it is cut at the limit,
/// always between two characters and never inside a formatting code. NUL is
/// removed, so no payload contains CR, LF or NUL, and no payload is empty.
///
/// mIRC formatting carries over: a payload starts with the codes for the
/// bold, italic, underline, strikethrough, monospace, reverse and colour that
/// were in force where the previous one ended, across lines too (IRC clients
/// reset them on every message, a Matrix message does not). Those codes count
/// toward the limit; if they leave no room for the next character, that
/// payload goes without them.
///
/// A limit smaller than a character (below 4 bytes, the longest UTF-8
/// character) cannot carry that character: such characters, and formatting
/// codes longer than the limit, are dropped. Real limits are hundreds of
/// bytes (see [`payload_limit`]).
pub fn split_message(text: &str, max_payload_bytes: usize) -> Vec<String> {
    let mut parts = Vec::new();
    let mut format = Format::default();
    for line in text.split(['\r', '\n']) {
        // `\r\n` leaves an empty piece between the two; it is dropped as
        // every empty line is.
        let line: String = line.chars().filter(|&c| c != '\0').collect();
        split_line(&line, max_payload_bytes, &mut format, &mut parts);
    }
    parts
}

/// Splits one line (without CR, LF or NUL) into `parts`, carrying `format`.
fn split_line(line: &str, max: usize, format: &mut Format, parts: &mut Vec<String>) {
    let atoms = atoms(line);
    let mut first = 0;
    while first < atoms.len() {
        let rest = &line[atoms[first].start..];
        let mut prefix = format.prefix(rest);
        if prefix.len() + atoms[first].len() > max {
            // Better unformatted text than none.
            prefix.clear();
        }
        let room = max - prefix.len().min(max);
        let content_start = atoms[first].start;

        // The longest run of whole atoms that fits.
        let mut end = first;
        while end < atoms.len() && atoms[end].end - content_start <= room {
            end += 1;
        }
        if end == first {
            // One atom larger than the whole limit: it cannot be sent.
            format.apply(&line[atoms[first].range()]);
            first += 1;
            continue;
        }

        let (cut, next) = if end == atoms.len() {
            (end, end)
        } else {
            // A space at `end` (just past the room) is as good as one inside.
            let space = (first + 1..=end).rev().find(|&at| {
                atoms[at].is_space(line)
                    && (atoms[at].start - content_start) * SPACE_SEARCH_DENOMINATOR
                        >= room * SPACE_SEARCH_NUMERATOR
            });
            match space {
                Some(at) => (at, at),
                None => (end, end),
            }
        };

        // Spaces at a cut are dropped on both sides.
        let mut last = cut;
        if cut < atoms.len() {
            while last > first + 1 && atoms[last - 1].is_space(line) {
                last -= 1;
            }
        }
        let content = &line[content_start..atoms[last - 1].end];
        let visible = has_visible_text(content);
        if visible {
            let mut part = prefix;
            part.push_str(content);
            parts.push(part);
        }
        for atom in &atoms[first..cut] {
            format.apply(&line[atom.range()]);
        }

        first = next;
        if first < atoms.len() {
            while first < atoms.len() && atoms[first].is_space(line) {
                first += 1;
            }
        }
    }
}

/// Whether `text` shows anything: a character that is neither whitespace nor
/// part of a formatting code.
fn has_visible_text(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        let len = code_len(&bytes[at..]);
        if len > 0 {
            at += len;
            continue;
        }
        if !bytes[at].is_ascii_whitespace() {
            return true;
        }
        at += 1;
    }
    false
}

/// The byte range of one unit that is never cut: a character, or a whole
/// formatting code with its parameters.
#[derive(Debug, Clone, Copy)]
struct Atom {
    start: usize,
    end: usize,
}

impl Atom {
    fn len(self) -> usize {
        self.end - self.start
    }

    fn range(self) -> std::ops::Range<usize> {
        self.start..self.end
    }

    fn is_space(self, line: &str) -> bool {
        &line[self.range()] == " "
    }
}

/// Cuts a line into atoms.
fn atoms(line: &str) -> Vec<Atom> {
    let bytes = line.as_bytes();
    let mut atoms = Vec::with_capacity(line.len());
    for (start, c) in line.char_indices() {
        // Skip the parameters of a code already taken whole.
        if atoms.last().is_some_and(|atom: &Atom| atom.end > start) {
            continue;
        }
        let len = code_len(&bytes[start..]).max(c.len_utf8());
        atoms.push(Atom {
            start,
            end: start + len,
        });
    }
    atoms
}

/// The length of the formatting code at the start of `bytes`, or 0 if it
/// does not start with one.
fn code_len(bytes: &[u8]) -> usize {
    match bytes.first() {
        Some(&(BOLD | ITALIC | UNDERLINE | STRIKETHROUGH | MONOSPACE | REVERSE | RESET)) => 1,
        Some(&kind @ (COLOR | HEX_COLOR)) => 1 + color_params_len(kind, &bytes[1..]),
        _ => 0,
    }
}

/// The mIRC formatting in force at a point of a message, kept as the codes
/// that set it so that it can be re-applied exactly as written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Format {
    /// Which of [`TOGGLES`] are on.
    toggles: [bool; TOGGLES.len()],
    /// The last colour code that set a background, if any since the last
    /// reset.
    background_code: Option<String>,
    /// The last colour code that set a foreground, if any since the last
    /// reset. When it set the background too, it is also `background_code`.
    foreground_code: Option<String>,
}

impl Format {
    /// Updates the state for one atom.
    fn apply(&mut self, atom: &str) {
        let bytes = atom.as_bytes();
        match bytes.first() {
            Some(&RESET) => *self = Format::default(),
            Some(&(COLOR | HEX_COLOR)) if bytes.len() == 1 => {
                self.background_code = None;
                self.foreground_code = None;
            }
            Some(&(COLOR | HEX_COLOR)) => {
                if atom.contains(',') {
                    self.background_code = Some(atom.to_owned());
                }
                self.foreground_code = Some(atom.to_owned());
            }
            Some(byte) => {
                if let Some(at) = TOGGLES.iter().position(|toggle| toggle == byte) {
                    self.toggles[at] = !self.toggles[at];
                }
            }
            None => {}
        }
    }

    /// The codes that restore this state at the start of a message whose
    /// text continues with `next`.
    fn prefix(&self, next: &str) -> String {
        let mut out = String::new();
        if let Some(background) = &self.background_code
            && self.foreground_code.as_ref() != Some(background)
        {
            out.push_str(background);
        }
        if let Some(foreground) = &self.foreground_code {
            out.push_str(foreground);
        }
        for (on, toggle) in self.toggles.iter().zip(TOGGLES) {
            if *on {
                out.push(char::from(toggle));
            }
        }
        // A colour code right before the text must not take the text's
        // first digits or comma as its own (`\x0304` then `,5`).
        if let Some(code) = &self.foreground_code
            && out.ends_with(code.as_str())
            && absorbs(code, next.as_bytes())
        {
            out.push_str(COLOR_GUARD);
        }
        out
    }
}

/// Whether `code` followed directly by `next` would read as a longer code.
fn absorbs(code: &str, next: &[u8]) -> bool {
    let Some((&kind, params)) = code.as_bytes().split_first() else {
        return false;
    };
    let mut probe = params.to_vec();
    probe.extend(next.iter().take(16));
    color_params_len(kind, &probe) != params.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part fits, is non-empty and has no CR, LF or NUL.
    fn assert_parts_ok(parts: &[String], max: usize) {
        for part in parts {
            assert!(part.len() <= max, "{part:?} is longer than {max}");
            assert!(!part.is_empty());
            assert!(
                !part.contains(['\r', '\n', '\0']),
                "{part:?} has a line break or NUL"
            );
        }
    }

    /// The characters a reader sees, without formatting codes or whitespace.
    fn visible(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = code_len(&bytes[at..]);
            if len > 0 {
                at += len;
                continue;
            }
            out.push(bytes[at]);
            at += 1;
        }
        String::from_utf8(out)
            .expect("codes are ASCII")
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '\0')
            .collect()
    }

    #[test]
    fn sanitize_line_removes_line_breaks_and_nul() {
        assert_eq!(sanitize_line("a\r\nb\nc\rd\0e"), "a b c de");
        assert_eq!(
            sanitize_line("hi\r\nPRIVMSG #x :pwned"),
            "hi PRIVMSG #x :pwned"
        );
        assert_eq!(sanitize_line("\r\n\r\n"), "  ");
        assert_eq!(sanitize_line("plain é 😀"), "plain é 😀");
    }

    #[test]
    fn payload_limit_formula() {
        let prefix = ":nick!user@example.org ";
        assert_eq!(
            payload_limit(prefix.len(), 0, "PRIVMSG #chan"),
            512 - prefix.len() - "PRIVMSG #chan".len() - 4
        );
        // The whole line is then exactly 512 bytes.
        let limit = payload_limit(prefix.len(), 0, "PRIVMSG #chan");
        let line = format!("{prefix}PRIVMSG #chan :{}\r\n", "x".repeat(limit));
        assert_eq!(line.len(), 512);
        // Tags have their own budget.
        assert_eq!(payload_limit(prefix.len(), 4000, "PRIVMSG #chan"), limit);
        assert_eq!(payload_limit(600, 0, "PRIVMSG #chan"), 0);
        assert_eq!(payload_limit(usize::MAX, 0, "PRIVMSG #chan"), 0);
    }

    #[test]
    fn short_message_is_one_part() {
        assert_eq!(split_message("hello", 100), ["hello"]);
    }

    #[test]
    fn exact_limit() {
        let text = "a".repeat(10);
        assert_eq!(split_message(&text, 10), [text]);
        let text = "a".repeat(11);
        assert_eq!(split_message(&text, 10), ["a".repeat(10), "a".to_owned()]);
        // With spaces: exactly the limit still passes whole.
        assert_eq!(split_message("aaaa bbbbb", 10), ["aaaa bbbbb"]);
        assert_eq!(split_message("aaaaaaa bbb", 10), ["aaaaaaa", "bbb"]);
    }

    #[test]
    fn multi_byte_characters_are_never_cut() {
        // é is 2 bytes: 5 bytes hold two of them.
        let parts = split_message(&"é".repeat(6), 5);
        assert_eq!(parts, ["éé", "éé", "éé"]);
        // An emoji is 4 bytes.
        let parts = split_message(&"😀".repeat(3), 6);
        assert_eq!(parts, ["😀", "😀", "😀"]);
        let parts = split_message("a😀b", 4);
        assert_eq!(parts, ["a", "😀", "b"]);
        // CJK characters are 3 bytes.
        let parts = split_message("漢字漢字漢", 7);
        assert_eq!(parts, ["漢字", "漢字", "漢"]);
        for max in 4..20 {
            let text = "é😀漢a".repeat(5);
            let parts = split_message(&text, max);
            assert_parts_ok(&parts, max);
            assert_eq!(parts.concat(), text);
        }
    }

    #[test]
    fn splits_at_the_last_space() {
        assert_eq!(split_message("hello world foo", 12), ["hello world", "foo"]);
        assert_eq!(
            split_message("the quick brown fox jumps", 10),
            ["the quick", "brown fox", "jumps"]
        );
        // Several spaces at the cut all go.
        assert_eq!(split_message("hello    world", 8), ["hello", "world"]);
        // A space right after the room counts.
        assert_eq!(split_message("abcdefghij klm", 10), ["abcdefghij", "klm"]);
    }

    #[test]
    fn early_spaces_are_not_used() {
        // The only space is 2 bytes into a room of 10: cutting there would
        // waste most of the part.
        assert_eq!(split_message("ab cdefghijkl", 10), ["ab cdefghi", "jkl"]);
    }

    #[test]
    fn line_breaks_split_and_empty_lines_go() {
        assert_eq!(
            split_message("one\ntwo\r\nthree\rfour", 100),
            ["one", "two", "three", "four"]
        );
        assert_eq!(split_message("a\n\n\r\n\r\rb", 100), ["a", "b"]);
        assert_eq!(split_message("a\n   \nb", 100), ["a", "b"]);
        assert!(split_message("", 100).is_empty());
        assert!(split_message("\r\n\n", 100).is_empty());
        // Leading spaces of a line are kept (indented code).
        assert_eq!(
            split_message("fn x() {\n    y\n}", 100),
            ["fn x() {", "    y", "}"]
        );
    }

    #[test]
    fn injection_attempts_stay_text() {
        let parts = split_message("hi\r\nPRIVMSG #x :pwned", 100);
        assert_eq!(parts, ["hi", "PRIVMSG #x :pwned"]);
        let parts = split_message("hi\rQUIT :bye\nJOIN #y\0\r\n", 100);
        assert_eq!(parts, ["hi", "QUIT :bye", "JOIN #y"]);
        assert_parts_ok(&parts, 100);
    }

    #[test]
    fn nul_is_removed() {
        assert_eq!(split_message("a\0b", 100), ["ab"]);
        assert!(split_message("\0\0", 100).is_empty());
    }

    #[test]
    fn formatting_carries_over() {
        let parts = split_message(&format!("\x02{}", "a".repeat(10)), 6);
        assert_eq!(parts, ["\x02aaaaa", "\x02aaaaa"]);
        // Closed before the cut: nothing to re-apply.
        let parts = split_message("\x02abcd\x02 efgh", 9);
        assert_eq!(parts, ["\x02abcd\x02", "efgh"]);
        // Across lines, as a Matrix message means it.
        let parts = split_message("\x1da\nb\x1d c", 100);
        assert_eq!(parts, ["\x1da", "\x1db\x1d c"]);
        // Reset clears everything.
        let parts = split_message("\x02\x0304a\x0f\nb", 100);
        assert_eq!(parts, ["\x02\x0304a\x0f", "b"]);
    }

    #[test]
    fn colours_carry_over() {
        let parts = split_message("\x0304,01abcdefgh", 10);
        assert_eq!(parts, ["\x0304,01abcd", "\x0304,01efgh"]);
        // A later foreground keeps the earlier background.
        let parts = split_message("\x0304,01ab\x0305cdefghijklmn", 14);
        assert_eq!(
            parts,
            [
                "\x0304,01ab\x0305cde",
                "\x0304,01\x0305fghij",
                "\x0304,01\x0305klmn"
            ]
        );
        // Toggles come after the colour.
        let parts = split_message("\x0312\x02abcdefgh", 10);
        assert_eq!(parts, ["\x0312\x02abcdef", "\x0312\x02gh"]);
        let parts = split_message("\x04ff0000abcdefghijkl", 12);
        assert_eq!(
            parts,
            ["\x04ff0000abcde", "\x04ff0000fghij", "\x04ff0000kl"]
        );
    }

    #[test]
    fn re_applied_colours_do_not_swallow_text() {
        let parts = split_message("\x0304abcdefg,5x", 10);
        assert_eq!(parts, ["\x0304abcdefg", "\x0304\x02\x02,5x"]);
        let parts = split_message("\x034abcdefgh5x", 10);
        assert_eq!(parts, ["\x034abcdefgh", "\x034\x02\x025x"]);
        // Two digits already: a digit after them is text.
        let parts = split_message("\x0304abcdefg5x", 10);
        assert_eq!(parts, ["\x0304abcdefg", "\x03045x"]);
    }

    #[test]
    fn formatting_codes_are_never_cut() {
        // The colour code would straddle the limit: it moves whole.
        let parts = split_message("abcd\x0304,01ef", 8);
        assert_eq!(parts, ["abcd", "\x0304,01ef"]);
        for part in &parts {
            assert!(!part.ends_with('\x03'));
        }
    }

    #[test]
    fn tiny_limits_still_progress() {
        assert!(split_message("abc", 0).is_empty());
        assert_eq!(split_message("abc", 1), ["a", "b", "c"]);
        // An emoji cannot fit in 3 bytes; the rest still goes out.
        assert_eq!(split_message("a😀b", 3), ["a", "b"]);
        // Formatting that leaves no room is dropped rather than the text.
        assert_eq!(split_message("\x02abc", 1), ["a", "b", "c"]);
    }

    /// A small linear congruential generator: reproducible, no crates.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as usize
        }
    }

    #[test]
    fn random_messages_keep_their_text() {
        let pieces = [
            "a",
            "b",
            "z",
            "0",
            "5",
            ",",
            " ",
            " ",
            "  ",
            "\t",
            "\r",
            "\n",
            "\r\n",
            "\0",
            "é",
            "😀",
            "漢",
            "字",
            "\u{301}",
            "\x02",
            "\x1d",
            "\x1f",
            "\x1e",
            "\x11",
            "\x16",
            "\x0f",
            "\x03",
            "\x034",
            "\x0304",
            "\x0312,01",
            "\x04ff0000",
            "\x04ff0000,00ff00",
            "PRIVMSG #x :",
            "word",
            "longerword",
        ];
        let mut rng = Lcg(12_345);
        for _ in 0..3_000 {
            let count = rng.next() % 60;
            let text: String = (0..count)
                .map(|_| pieces[rng.next() % pieces.len()])
                .collect();
            let max = 4 + rng.next() % 60;
            let parts = split_message(&text, max);
            assert_parts_ok(&parts, max);

            // What a reader sees is kept, in order: each line is read on its
            // own, as a client reads each message, after NUL is gone.
            let expected: String = text
                .split(['\r', '\n'])
                .map(|line| visible(&line.replace('\0', "")))
                .collect();
            let got: String = parts.iter().map(|part| visible(part)).collect();
            assert_eq!(got, expected, "text {text:?}, max {max}, parts {parts:?}");
        }
    }
}
