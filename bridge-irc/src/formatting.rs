//! mIRC formatting codes and Matrix HTML, both ways.
//!
//! This module owns what IRC formatting means to the bridge: [`IrcMarkup`]
//! turns Matrix HTML into text with mIRC control codes (through
//! [`bridge_core::format::html_to_text`]), [`irc_to_html`] turns those codes
//! back into Matrix HTML, and [`strip_formatting`] gives the plain body. The
//! mIRC colour palette and the reading of colour codes live here too.
//!
//! The codes are the de-facto set documented by modern IRC clients: bold
//! `\x02`, italic `\x1D`, underline `\x1F`, strikethrough `\x1E`, monospace
//! `\x11`, colour `\x03[fg[,bg]]`, hex colour `\x04[RRGGBB[,RRGGBB]]`,
//! reverse `\x16` and reset `\x0F`. Every code is ASCII, so reading them byte
//! by byte never cuts a UTF-8 character.

use bridge_core::format::{TextMarkup, text_to_html};

pub(crate) const BOLD: u8 = 0x02;
pub(crate) const COLOR: u8 = 0x03;
pub(crate) const HEX_COLOR: u8 = 0x04;
pub(crate) const RESET: u8 = 0x0F;
pub(crate) const MONOSPACE: u8 = 0x11;
pub(crate) const REVERSE: u8 = 0x16;
pub(crate) const ITALIC: u8 = 0x1D;
pub(crate) const STRIKETHROUGH: u8 = 0x1E;
pub(crate) const UNDERLINE: u8 = 0x1F;

/// A colour code that ends the colour, restoring the client's default.
const COLOR_OFF: &str = "\x03";

/// An empty bold pair, a no-op in every client. It sits between a colour code
/// and text that would otherwise be read as part of the code: `\x0304` then
/// `,5 apples` must not become "red on brown".
const COLOR_GUARD: &str = "\x02\x02";

/// The mIRC palette as `0xRRGGBB`: the 16 standard colours (0–15), then the
/// 83 extended ones (16–98) that modern clients agree on. Colour 99 means
/// "the default colour" and has no entry.
const PALETTE: [u32; 99] = [
    // 0–15: white, black, blue, green, red, brown, magenta, orange, yellow,
    // light green, cyan, light cyan, light blue, pink, grey, light grey.
    0xFFFFFF, 0x000000, 0x00007F, 0x009300, 0xFF0000, 0x7F0000, 0x9C009C, 0xFC7F00, 0xFFFF00,
    0x00FC00, 0x009393, 0x00FFFF, 0x0000FC, 0xFF00FF, 0x7F7F7F, 0xD2D2D2,
    // 16–98: six rows of twelve hues from dark to light, then greys.
    0x470000, 0x472100, 0x474700, 0x324700, 0x004700, 0x00472C, 0x004747, 0x002747, 0x000047,
    0x2E0047, 0x470047, 0x47002A, 0x740000, 0x743A00, 0x747400, 0x517400, 0x007400, 0x007449,
    0x007474, 0x004074, 0x000074, 0x4B0074, 0x740074, 0x740045, 0xB50000, 0xB56300, 0xB5B500,
    0x7DB500, 0x00B500, 0x00B571, 0x00B5B5, 0x0063B5, 0x0000B5, 0x7500B5, 0xB500B5, 0xB5006B,
    0xFF0000, 0xFF8C00, 0xFFFF00, 0xB2FF00, 0x00FF00, 0x00FFA0, 0x00FFFF, 0x008CFF, 0x0000FF,
    0xA500FF, 0xFF00FF, 0xFF0098, 0xFF5959, 0xFFB459, 0xFFFF71, 0xCFFF60, 0x6FFF6F, 0x65FFC9,
    0x6DFFFF, 0x59B4FF, 0x5959FF, 0xC459FF, 0xFF66FF, 0xFF59BC, 0xFF9C9C, 0xFFD39C, 0xFFFF9C,
    0xE2FF9C, 0x9CFF9C, 0x9CFFDB, 0x9CFFFF, 0x9CD3FF, 0x9C9CFF, 0xDC9CFF, 0xFF9CFF, 0xFF94D3,
    0x000000, 0x131313, 0x282828, 0x363636, 0x4D4D4D, 0x656565, 0x818181, 0x9F9F9F, 0xBCBCBC,
    0xE2E2E2, 0xFFFFFF,
];

/// How many palette entries Matrix colours are matched against: only the 16
/// standard ones, because many clients still show the extended ones wrongly
/// or not at all.
const STANDARD_COLORS: usize = 16;

/// The colour names a `<font color>` may carry besides `#rrggbb` (the
/// sanitizer lets any alphabetic name through; these are the CSS basics).
const COLOR_NAMES: [(&str, u32); 20] = [
    ("black", 0x000000),
    ("silver", 0xC0C0C0),
    ("gray", 0x808080),
    ("grey", 0x808080),
    ("white", 0xFFFFFF),
    ("maroon", 0x800000),
    ("red", 0xFF0000),
    ("purple", 0x800080),
    ("fuchsia", 0xFF00FF),
    ("magenta", 0xFF00FF),
    ("green", 0x008000),
    ("lime", 0x00FF00),
    ("olive", 0x808000),
    ("yellow", 0xFFFF00),
    ("navy", 0x000080),
    ("blue", 0x0000FF),
    ("teal", 0x008080),
    ("aqua", 0x00FFFF),
    ("cyan", 0x00FFFF),
    ("orange", 0xFFA500),
];

/// Renders Matrix HTML as IRC text with mIRC control codes, for
/// [`html_to_text`](bridge_core::format::html_to_text).
///
/// Bold, italic, underline, strikethrough and inline code wrap their text in
/// a pair of their toggle code; colours wrap it in the nearest standard mIRC
/// colour and a closing `\x03`. Each hook closes what it opens, so nesting
/// works without a `\x0F` (which would also cancel the styles around it), and
/// wraps every line on its own, because IRC clients reset formatting at the
/// end of each message and the bridge sends one message per line.
///
/// Mentions show the pill's text (the bridge puts nicks there), code blocks
/// keep their code as it is, and everything else (links, spoilers, quotes,
/// lists) keeps the framework's plain-text defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IrcMarkup;

impl TextMarkup for IrcMarkup {
    fn bold(&self, text: &str) -> String {
        toggle(BOLD, text)
    }

    fn italic(&self, text: &str) -> String {
        toggle(ITALIC, text)
    }

    fn underline(&self, text: &str) -> String {
        toggle(UNDERLINE, text)
    }

    fn strikethrough(&self, text: &str) -> String {
        toggle(STRIKETHROUGH, text)
    }

    fn inline_code(&self, code: &str) -> String {
        toggle(MONOSPACE, code)
    }

    fn color(&self, text: &str, foreground: Option<&str>, background: Option<&str>) -> String {
        let Some(code) = color_code(foreground, background) else {
            return text.to_owned();
        };
        per_line(text, |line, last| {
            let mut tokens = vec![Token::Color(&code)];
            for token in tokenize(line) {
                tokens.push(token);
                // A nested colour ends by resetting the colour: bring this
                // one back, or the rest of the text would lose it.
                if let Token::Color(inner) = token
                    && inner.len() == 1
                {
                    tokens.push(Token::Color(&code));
                }
            }
            tokens.push(Token::Color(COLOR_OFF));
            // What follows the last line is outside this hook and may start
            // with a digit that the closing `\x03` would swallow.
            render(&tokens, last)
        })
    }
}

/// Wraps every line of `text` in a pair of `code`.
fn toggle(code: u8, text: &str) -> String {
    per_line(text, |line, _| {
        let mut tokens = vec![Token::Toggle(code)];
        // An inner pair of the same code would switch the style off halfway
        // (`<b>a <b>b</b> c</b>`); the outer pair already covers its text.
        tokens.extend(
            tokenize(line)
                .into_iter()
                .filter(|token| *token != Token::Toggle(code)),
        );
        tokens.push(Token::Toggle(code));
        render(&tokens, false)
    })
}

/// Applies `wrap` to each non-empty line of `text`, telling it whether the
/// line is the last one.
fn per_line(text: &str, mut wrap: impl FnMut(&str, bool) -> String) -> String {
    let count = text.split('\n').count();
    let lines: Vec<String> = text
        .split('\n')
        .enumerate()
        .map(|(index, line)| {
            if line.is_empty() {
                String::new()
            } else {
                wrap(line, index + 1 == count)
            }
        })
        .collect();
    lines.join("\n")
}

/// The `\x03` code for a Matrix foreground and background, or `None` when
/// neither is a colour we can read.
fn color_code(foreground: Option<&str>, background: Option<&str>) -> Option<String> {
    let foreground = foreground.and_then(parse_css_color).map(nearest_color);
    let background = background.and_then(parse_css_color).map(nearest_color);
    match (foreground, background) {
        (None, None) => None,
        // Always two digits, so that text starting with a digit stays text.
        (Some(fg), None) => Some(format!("\x03{fg:02}")),
        (fg, Some(bg)) => {
            // IRC cannot give a background alone; pick a readable foreground.
            let fg = fg.unwrap_or_else(|| contrasting_color(bg));
            Some(format!("\x03{fg:02},{bg:02}"))
        }
    }
}

/// Reads `#rrggbb`, `#rgb` or a basic CSS colour name.
fn parse_css_color(value: &str) -> Option<u32> {
    let value = value.trim();
    if let Some(hex) = value.strip_prefix('#') {
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let rgb = u32::from_str_radix(hex, 16).ok()?;
        return match hex.len() {
            6 => Some(rgb),
            // `#abc` is `#aabbcc`: each nibble doubled.
            3 => {
                let (r, g, b) = ((rgb >> 8) & 0xF, (rgb >> 4) & 0xF, rgb & 0xF);
                Some(((r * 0x11) << 16) | ((g * 0x11) << 8) | (b * 0x11))
            }
            _ => None,
        };
    }
    COLOR_NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
        .map(|&(_, rgb)| rgb)
}

/// The index of the standard mIRC colour closest to `rgb`.
fn nearest_color(rgb: u32) -> usize {
    PALETTE[..STANDARD_COLORS]
        .iter()
        .enumerate()
        .min_by_key(|&(_, &candidate)| color_distance(rgb, candidate))
        .map_or(1, |(index, _)| index)
}

/// The squared "redmean" distance: plain RGB distance weighted the way the
/// eye weighs red, green and blue, cheap and much better than unweighted.
fn color_distance(a: u32, b: u32) -> i64 {
    let channel = |rgb: u32, shift: u32| i64::from((rgb >> shift) & 0xFF);
    let (r1, g1, b1) = (channel(a, 16), channel(a, 8), channel(a, 0));
    let (r2, g2, b2) = (channel(b, 16), channel(b, 8), channel(b, 0));
    let mean_red = (r1 + r2) / 2;
    let (dr, dg, db) = (r1 - r2, g1 - g2, b1 - b2);
    (((512 + mean_red) * dr * dr) >> 8) + 4 * dg * dg + (((767 - mean_red) * db * db) >> 8)
}

/// Black (1) on light backgrounds, white (0) on dark ones.
fn contrasting_color(background: usize) -> usize {
    let rgb = PALETTE.get(background).copied().unwrap_or(0);
    let channel = |shift: u32| (rgb >> shift) & 0xFF;
    let luma = 299 * channel(16) + 587 * channel(8) + 114 * channel(0);
    if luma > 128_000 { 1 } else { 0 }
}

/// Converts IRC text with mIRC formatting codes to Matrix HTML
/// (`formatted_body`).
///
/// Bold, italic, underline, strikethrough and monospace become `<b>`, `<i>`,
/// `<u>`, `<del>` and `<code>`; colours become
/// `<font data-mx-color="#rrggbb" data-mx-bg-color="#rrggbb">`. Reverse
/// (`\x16`) is dropped, as Matrix has nothing like it. Text is escaped and
/// line breaks become `<br>`.
///
/// IRC toggles may overlap (`\x02a\x1Db\x02c\x1D`); the HTML is always
/// properly nested, closing and reopening elements where needed.
///
/// Returns `None` when no text is formatted, so the bridge sends the plain
/// body alone.
pub fn irc_to_html(text: &str) -> Option<String> {
    irc_to_html_mentioning(text, &|_| None)
}

/// [`irc_to_html`], with each word that `pill` knows (a nick) replaced by the HTML it
/// gives (a mention pill); `None` when there is neither formatting nor a pill.
pub fn irc_to_html_mentioning(text: &str, pill: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let runs = styled_runs(text);
    let pills = runs
        .iter()
        .any(|(_, chunk)| nick_words(chunk).any(|(_, word)| pill(word).is_some()));
    if !pills && runs.iter().all(|(style, _)| *style == Style::default()) {
        return None;
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut open: Vec<Tag> = Vec::new();
    for (style, chunk) in runs {
        let wanted = style.tags();
        // Keep the elements that both runs share from the outside in; close
        // the rest and open what the new run needs. This is what keeps the
        // HTML nested however the toggles overlap.
        let shared = open
            .iter()
            .zip(&wanted)
            .take_while(|(open, wanted)| open == wanted)
            .count();
        while open.len() > shared {
            if let Some(tag) = open.pop() {
                tag.close(&mut out);
            }
        }
        for tag in &wanted[shared..] {
            tag.open(&mut out);
            open.push(*tag);
        }
        let mut written = 0;
        for (at, word) in nick_words(chunk) {
            if let Some(html) = pill(word) {
                out.push_str(&text_to_html(&chunk[written..at]));
                out.push_str(&html);
                written = at + word.len();
            }
        }
        out.push_str(&text_to_html(&chunk[written..]));
    }
    while let Some(tag) = open.pop() {
        tag.close(&mut out);
    }
    Some(out)
}

/// The words of `text` that may be nicks (runs of letters, digits and `[]\\`_^{|}-`),
/// with their byte offsets.
fn nick_words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let is_nick_char = |c: char| c.is_ascii_alphanumeric() || "[]\\`_^{|}-".contains(c);
    let mut rest = text.char_indices().peekable();
    std::iter::from_fn(move || {
        while rest.peek().is_some_and(|(_, c)| !is_nick_char(*c)) {
            rest.next();
        }
        let (start, _) = *rest.peek()?;
        let mut end = start;
        while let Some((at, c)) = rest.peek().copied().filter(|(_, c)| is_nick_char(*c)) {
            end = at + c.len_utf8();
            rest.next();
        }
        Some((start, &text[start..end]))
    })
}

/// Removes every mIRC formatting code, colour numbers included: the plain
/// body of a message.
pub fn strip_formatting(text: &str) -> String {
    tokenize(text)
        .into_iter()
        .filter_map(|token| match token {
            Token::Text(text) => Some(text),
            _ => None,
        })
        .collect()
}

/// A piece of IRC text: plain text or one whole formatting code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Text(&'a str),
    /// Bold, italic, underline, strikethrough, monospace or reverse.
    Toggle(u8),
    /// A `\x03` or `\x04` code with its parameters; alone it resets colours.
    Color(&'a str),
    /// `\x0F`.
    Reset,
}

/// Splits IRC text into text and formatting codes.
fn tokenize(text: &str) -> Vec<Token<'_>> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let (mut start, mut at) = (0, 0);
    while let Some(&byte) = bytes.get(at) {
        let token_len = match byte {
            BOLD | ITALIC | UNDERLINE | STRIKETHROUGH | MONOSPACE | REVERSE | RESET => 1,
            COLOR | HEX_COLOR => 1 + color_params_len(byte, bytes.get(at + 1..).unwrap_or(&[])),
            _ => {
                at += 1;
                continue;
            }
        };
        if start < at {
            tokens.push(Token::Text(&text[start..at]));
        }
        tokens.push(match byte {
            COLOR | HEX_COLOR => Token::Color(&text[at..at + token_len]),
            RESET => Token::Reset,
            _ => Token::Toggle(byte),
        });
        at += token_len;
        start = at;
    }
    if start < bytes.len() {
        tokens.push(Token::Text(&text[start..]));
    }
    tokens
}

/// How many bytes after a `\x03` (`kind` `COLOR`) or `\x04` (`HEX_COLOR`)
/// belong to it: a foreground of one or two digits (six hex digits for
/// `\x04`), then optionally a comma and a background of the same form. A
/// comma not followed by a colour is text.
pub(crate) fn color_params_len(kind: u8, rest: &[u8]) -> usize {
    let field = |at: usize| {
        let rest = rest.get(at..).unwrap_or(&[]);
        if kind == COLOR {
            rest.iter()
                .take(2)
                .take_while(|b| b.is_ascii_digit())
                .count()
        } else if rest.len() >= 6 && rest[..6].iter().all(u8::is_ascii_hexdigit) {
            6
        } else {
            0
        }
    };
    let foreground = field(0);
    if foreground == 0 {
        return 0;
    }
    if rest.get(foreground) == Some(&b',') {
        let background = field(foreground + 1);
        if background > 0 {
            return foreground + 1 + background;
        }
    }
    foreground
}

/// Whether `code` followed directly by `next` would read as a different,
/// longer code (`\x03` then `5`, or `\x0304` then `,5`).
fn absorbs(code: &str, next: &[u8]) -> bool {
    let Some((&kind, params)) = code.as_bytes().split_first() else {
        return false;
    };
    let mut probe = params.to_vec();
    probe.extend_from_slice(next);
    color_params_len(kind, &probe) != params.len()
}

/// Writes tokens back as IRC text: cancels adjacent pairs of the same toggle
/// (no-ops, often left behind by stripping) and puts [`COLOR_GUARD`] after a
/// colour code wherever the next text would otherwise join it. With
/// `guard_end`, a colour code at the very end is guarded too, because the
/// caller does not know what text will follow.
fn render(tokens: &[Token<'_>], guard_end: bool) -> String {
    let mut kept: Vec<Token<'_>> = Vec::with_capacity(tokens.len());
    for &token in tokens {
        if let Token::Toggle(code) = token
            && kept.last() == Some(&Token::Toggle(code))
        {
            kept.pop();
            continue;
        }
        kept.push(token);
    }
    let mut out = String::new();
    for (index, token) in kept.iter().enumerate() {
        match token {
            Token::Text(text) => out.push_str(text),
            Token::Toggle(code) => out.push(char::from(*code)),
            Token::Color(code) => {
                out.push_str(code);
                let next: Vec<u8> = kept[index + 1..]
                    .iter()
                    .map_while(|token| match token {
                        Token::Text(text) => Some(text.as_bytes()),
                        _ => None,
                    })
                    .flatten()
                    .take(16)
                    .copied()
                    .collect();
                let at_end = index + 1 == kept.len();
                if (at_end && guard_end) || (!next.is_empty() && absorbs(code, &next)) {
                    out.push_str(COLOR_GUARD);
                }
            }
            Token::Reset => out.push(char::from(RESET)),
        }
    }
    out
}

/// The formatting in force at some point of IRC text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Style {
    bold: bool,
    italic: bool,
    underline: bool,
    strikethrough: bool,
    monospace: bool,
    foreground: Option<u32>,
    background: Option<u32>,
}

impl Style {
    fn toggle(&mut self, code: u8) {
        let flag = match code {
            BOLD => &mut self.bold,
            ITALIC => &mut self.italic,
            UNDERLINE => &mut self.underline,
            STRIKETHROUGH => &mut self.strikethrough,
            MONOSPACE => &mut self.monospace,
            // Reverse video has no Matrix equivalent.
            _ => return,
        };
        *flag = !*flag;
    }

    /// Applies a whole `\x03` or `\x04` code.
    fn set_color(&mut self, code: &str) {
        let Some((&kind, params)) = code.as_bytes().split_first() else {
            return;
        };
        let params = String::from_utf8_lossy(params);
        if params.is_empty() {
            self.foreground = None;
            self.background = None;
            return;
        }
        let value = |field: &str| match kind {
            COLOR => field
                .parse::<usize>()
                .ok()
                .and_then(|n| PALETTE.get(n).copied()),
            _ => u32::from_str_radix(field, 16).ok(),
        };
        match params.split_once(',') {
            Some((fg, bg)) => {
                self.foreground = value(fg);
                self.background = value(bg);
            }
            // A foreground alone keeps the background.
            None => self.foreground = value(&params),
        }
    }

    /// The elements that show this style, outermost first. The order is
    /// fixed so that consecutive runs share as many outer elements as they
    /// can.
    fn tags(&self) -> Vec<Tag> {
        let mut tags = Vec::new();
        for (on, tag) in [
            (self.bold, Tag::Bold),
            (self.italic, Tag::Italic),
            (self.underline, Tag::Underline),
            (self.strikethrough, Tag::Strikethrough),
        ] {
            if on {
                tags.push(tag);
            }
        }
        if self.foreground.is_some() || self.background.is_some() {
            tags.push(Tag::Font {
                foreground: self.foreground,
                background: self.background,
            });
        }
        if self.monospace {
            tags.push(Tag::Code);
        }
        tags
    }
}

/// Splits IRC text into runs of text that share one style.
fn styled_runs(text: &str) -> Vec<(Style, &str)> {
    let mut style = Style::default();
    let mut runs = Vec::new();
    for token in tokenize(text) {
        match token {
            Token::Text(text) => runs.push((style, text)),
            Token::Toggle(code) => style.toggle(code),
            Token::Color(code) => style.set_color(code),
            Token::Reset => style = Style::default(),
        }
    }
    runs
}

/// An HTML element that shows part of a [`Style`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Font {
        foreground: Option<u32>,
        background: Option<u32>,
    },
    Code,
}

impl Tag {
    fn open(self, out: &mut String) {
        match self {
            Tag::Bold => out.push_str("<b>"),
            Tag::Italic => out.push_str("<i>"),
            Tag::Underline => out.push_str("<u>"),
            Tag::Strikethrough => out.push_str("<del>"),
            Tag::Code => out.push_str("<code>"),
            Tag::Font {
                foreground,
                background,
            } => {
                out.push_str("<font");
                if let Some(rgb) = foreground {
                    out.push_str(&format!(" data-mx-color=\"#{rgb:06x}\""));
                }
                if let Some(rgb) = background {
                    out.push_str(&format!(" data-mx-bg-color=\"#{rgb:06x}\""));
                }
                out.push('>');
            }
        }
    }

    fn close(self, out: &mut String) {
        out.push_str(match self {
            Tag::Bold => "</b>",
            Tag::Italic => "</i>",
            Tag::Underline => "</u>",
            Tag::Strikethrough => "</del>",
            Tag::Font { .. } => "</font>",
            Tag::Code => "</code>",
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bridge_core::format::html_to_text;

    fn irc(html: &str) -> String {
        html_to_text(html, &IrcMarkup)
    }

    fn html(text: &str) -> String {
        irc_to_html(text).expect("formatted")
    }

    /// Checks that every element is closed in order and that no `<` or `>`
    /// appears outside a tag, i.e. that the text was escaped.
    fn assert_well_formed(html: &str) {
        let mut stack: Vec<String> = Vec::new();
        let mut rest = html;
        while let Some(start) = rest.find('<') {
            assert!(!rest[..start].contains('>'), "stray > in {html:?}");
            let end = rest[start..].find('>').expect("tag ends") + start;
            let tag = &rest[start + 1..end];
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "in {html:?}");
            } else {
                let name = tag.split(' ').next().unwrap_or_default();
                assert!(
                    ["b", "i", "u", "del", "code", "font", "br"].contains(&name),
                    "unexpected <{tag}> in {html:?}"
                );
                if name != "br" {
                    stack.push(name.to_owned());
                }
            }
            rest = &rest[end + 1..];
        }
        assert!(!rest.contains('>'), "stray > in {html:?}");
        assert!(stack.is_empty(), "unclosed {stack:?} in {html:?}");
    }

    // --- Matrix HTML to IRC ---

    #[test]
    fn toggles_wrap_their_text() {
        assert_eq!(irc("<b>b</b>"), "\x02b\x02");
        assert_eq!(irc("<strong>b</strong>"), "\x02b\x02");
        assert_eq!(irc("<i>i</i> <em>e</em>"), "\x1di\x1d \x1de\x1d");
        assert_eq!(irc("<u>u</u>"), "\x1fu\x1f");
        assert_eq!(irc("<del>d</del> <s>s</s>"), "\x1ed\x1e \x1es\x1e");
        assert_eq!(irc("use <code>ls -l</code>"), "use \x11ls -l\x11");
    }

    #[test]
    fn nested_toggles_each_close() {
        assert_eq!(irc("<b>a <i>b</i> c</b>"), "\x02a \x1db\x1d c\x02");
        assert_eq!(irc("<b><i><u>x</u></i></b>"), "\x02\x1d\x1fx\x1f\x1d\x02");
    }

    #[test]
    fn nested_same_toggle_keeps_style() {
        assert_eq!(irc("<b>a <strong>b</strong> c</b>"), "\x02a b c\x02");
        assert_eq!(irc("<b><b>x</b></b>"), "\x02x\x02");
    }

    #[test]
    fn toggles_close_on_every_line() {
        assert_eq!(irc("<b>a<br>b</b>"), "\x02a\x02\n\x02b\x02");
        assert_eq!(irc("<b>a<br><br>b</b>"), "\x02a\x02\n\n\x02b\x02");
    }

    #[test]
    fn colours_map_to_the_nearest_standard_colour() {
        assert_eq!(
            irc(r##"<font data-mx-color="#ff0000">red</font>"##),
            "\x0304red\x03\x02\x02"
        );
        assert_eq!(
            irc(r##"<font data-mx-color="#f00">red</font> x"##),
            "\x0304red\x03\x02\x02 x"
        );
        assert_eq!(
            irc(r##"<span data-mx-color="#0000ee">blue</span> x"##),
            "\x0312blue\x03\x02\x02 x"
        );
        assert_eq!(
            irc(r#"<font color="red">r</font> x"#),
            "\x0304r\x03\x02\x02 x"
        );
        assert_eq!(
            irc(r#"<font color="Navy">n</font> x"#),
            "\x0302n\x03\x02\x02 x"
        );
        assert_eq!(
            irc(r##"<font color="#808080">g</font> x"##),
            "\x0314g\x03\x02\x02 x"
        );
        assert_eq!(
            irc(r##"<font color="#d0d0d0">g</font> x"##),
            "\x0315g\x03\x02\x02 x"
        );
    }

    #[test]
    fn every_standard_colour_maps_to_itself() {
        for (index, rgb) in PALETTE[..STANDARD_COLORS].iter().enumerate() {
            assert_eq!(nearest_color(*rgb), index, "#{rgb:06x}");
        }
    }

    #[test]
    fn colours_with_background() {
        assert_eq!(
            irc(r##"<span data-mx-color="#ffffff" data-mx-bg-color="#000000">x</span> y"##),
            "\x0300,01x\x03\x02\x02 y"
        );
        // A background alone gets a readable foreground.
        assert_eq!(
            irc(r##"<span data-mx-bg-color="#000000">x</span> y"##),
            "\x0300,01x\x03\x02\x02 y"
        );
        assert_eq!(
            irc(r##"<span data-mx-bg-color="#ffff00">x</span> y"##),
            "\x0301,08x\x03\x02\x02 y"
        );
    }

    #[test]
    fn unreadable_colours_are_ignored() {
        assert_eq!(irc(r#"<font color="notacolour">x</font>"#), "x");
        assert_eq!(irc(r##"<font color="#12345">x</font>"##), "x");
        assert_eq!(irc(r##"<font color="#+12345">x</font>"##), "x");
    }

    #[test]
    fn colour_codes_never_swallow_digits_or_commas() {
        // Two-digit codes keep a following digit as text.
        assert_eq!(
            irc(r##"<font color="#ff0000">5 apples</font> x"##),
            "\x03045 apples\x03\x02\x02 x"
        );
        // `\x0304,5` would be read as a background.
        assert_eq!(
            irc(r##"<font color="#ff0000">,5</font> x"##),
            "\x0304\x02\x02,5\x03\x02\x02 x"
        );
        // Text right after the closing `\x03`.
        let text = irc(r##"<font color="#ff0000">x</font>5"##);
        assert_eq!(text, "\x0304x\x03\x02\x025");
        assert_eq!(strip_formatting(&text), "x5");
        let text = irc(r##"<b><font color="#ff0000">x</font>5</b>"##);
        assert_eq!(text, "\x02\x0304x\x03\x02\x025\x02");
        assert_eq!(
            irc_to_html(&text).as_deref(),
            Some(r##"<b><font data-mx-color="#ff0000">x</font>5</b>"##)
        );
    }

    #[test]
    fn nested_colours_restore_the_outer_one() {
        let text = irc(r##"<font color="#ff0000">a <font color="#0000fc">b</font> c</font> x"##);
        assert_eq!(text, "\x0304a \x0312b\x03\x0304 c\x03\x02\x02 x");
        assert_eq!(
            irc_to_html(&text).as_deref(),
            Some(
                r##"<font data-mx-color="#ff0000">a </font><font data-mx-color="#0000fc">b</font><font data-mx-color="#ff0000"> c</font> x"##
            )
        );
    }

    #[test]
    fn mentions_show_the_pill_text() {
        assert_eq!(
            irc(r#"hi <a href="https://matrix.to/#/@alice:example.org">alice</a>: look"#),
            "hi alice: look"
        );
        let user = ruma::user_id!("@bob:example.org");
        assert_eq!(IrcMarkup.user_mention(user, "bob"), "bob");
    }

    #[test]
    fn code_blocks_are_kept_as_they_are() {
        assert_eq!(
            irc("<pre><code class=\"language-sh\">ls\n  -l\n</code></pre>"),
            "ls\n  -l"
        );
    }

    #[test]
    fn defaults_for_the_rest() {
        assert_eq!(
            irc(r#"<a href="https://example.org">site</a>"#),
            "site (https://example.org)"
        );
        assert_eq!(
            irc("<blockquote><b>q</b></blockquote>r"),
            "> \x02q\x02\n\nr"
        );
        assert_eq!(irc("<ul><li>a</li><li>b</li></ul>"), "- a\n- b");
        assert_eq!(irc("<span data-mx-spoiler>s</span>"), "[spoiler] s");
    }

    #[test]
    fn random_html_loses_no_text() {
        use bridge_core::format::PlainText;
        // Digits and commas next to colours are where codes could swallow
        // text; nested same elements are where stripping could go wrong.
        let pieces = [
            "<b>",
            "</b>",
            "<i>",
            "</i>",
            "<u>",
            "</u>",
            "<del>",
            "</del>",
            "<code>",
            "</code>",
            r##"<font color="#ff0000">"##,
            r##"<font color="#00f">"##,
            r##"<span data-mx-bg-color="#000000">"##,
            r##"<span data-mx-color="#00ff00" data-mx-bg-color="#ffffff">"##,
            "</font>",
            "</span>",
            "<br>",
            "<p>",
            "</p>",
            "1",
            "23",
            ",",
            ",4",
            "a",
            " ",
            "é",
            "😀",
        ];
        let mut seed: u64 = 99;
        for _ in 0..2_000 {
            let mut html = String::new();
            for _ in 0..16 {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                html.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            let text = irc(&html);
            assert_eq!(
                strip_formatting(&text),
                html_to_text(&html, &PlainText),
                "{html:?} gave {text:?}"
            );
            if let Some(back) = irc_to_html(&text) {
                assert_well_formed(&back);
            }
        }
    }

    // --- IRC to Matrix HTML ---

    #[test]
    fn each_toggle_code() {
        assert_eq!(html("\x02b\x02 x"), "<b>b</b> x");
        assert_eq!(html("\x1di\x1d"), "<i>i</i>");
        assert_eq!(html("\x1fu\x1f"), "<u>u</u>");
        assert_eq!(html("\x1es\x1e"), "<del>s</del>");
        assert_eq!(html("\x11c\x11"), "<code>c</code>");
        // Unclosed toggles end with the text.
        assert_eq!(html("a \x02b"), "a <b>b</b>");
    }

    #[test]
    fn reset_ends_everything() {
        assert_eq!(
            html("\x02\x1d\x0304ab\x0fc"),
            r##"<b><i><font data-mx-color="#ff0000">ab</font></i></b>c"##
        );
    }

    #[test]
    fn reverse_is_ignored() {
        assert_eq!(irc_to_html("\x16x\x16"), None);
        assert_eq!(strip_formatting("\x16x\x16"), "x");
        assert_eq!(html("\x02a\x16b\x02"), "<b>ab</b>");
    }

    #[test]
    fn colour_codes() {
        assert_eq!(
            html("\x034red"),
            r##"<font data-mx-color="#ff0000">red</font>"##
        );
        assert_eq!(
            html("\x0304red\x03 x"),
            r##"<font data-mx-color="#ff0000">red</font> x"##
        );
        assert_eq!(
            html("\x0312blue"),
            r##"<font data-mx-color="#0000fc">blue</font>"##
        );
        // Only two digits belong to the code.
        assert_eq!(
            html("\x031234"),
            r##"<font data-mx-color="#0000fc">34</font>"##
        );
        assert_eq!(
            html("\x030,1x"),
            r##"<font data-mx-color="#ffffff" data-mx-bg-color="#000000">x</font>"##
        );
        assert_eq!(
            html("\x0300,01x\x0304y"),
            r##"<font data-mx-color="#ffffff" data-mx-bg-color="#000000">x</font><font data-mx-color="#ff0000" data-mx-bg-color="#000000">y</font>"##
        );
        // Extended colours.
        assert_eq!(
            html("\x0352x"),
            r##"<font data-mx-color="#ff0000">x</font>"##
        );
        assert_eq!(
            html("\x0398x"),
            r##"<font data-mx-color="#ffffff">x</font>"##
        );
    }

    #[test]
    fn invalid_colour_codes() {
        // `\x03` without digits resets, and what follows is text.
        assert_eq!(irc_to_html("\x03abc"), None);
        assert_eq!(strip_formatting("\x03abc"), "abc");
        assert_eq!(
            html("\x0304a\x03b"),
            r##"<font data-mx-color="#ff0000">a</font>b"##
        );
        // A comma without a background is text.
        assert_eq!(
            html("\x0304,x"),
            r##"<font data-mx-color="#ff0000">,x</font>"##
        );
        assert_eq!(strip_formatting("\x03,5"), ",5");
        // 99 is the default colour: no colour at all.
        assert_eq!(irc_to_html("\x0399x"), None);
        assert_eq!(strip_formatting("\x0399x"), "x");
        assert_eq!(
            html("\x0304,01a\x0399b"),
            r##"<font data-mx-color="#ff0000" data-mx-bg-color="#000000">a</font><font data-mx-bg-color="#000000">b</font>"##
        );
    }

    #[test]
    fn hex_colour_codes() {
        assert_eq!(
            html("\x04FF8800x"),
            r##"<font data-mx-color="#ff8800">x</font>"##
        );
        assert_eq!(
            html("\x04ff8800,000080x"),
            r##"<font data-mx-color="#ff8800" data-mx-bg-color="#000080">x</font>"##
        );
        assert_eq!(irc_to_html("\x04zzz"), None);
        assert_eq!(strip_formatting("\x04FF8800,x\x04"), ",x");
        assert_eq!(strip_formatting("\x04FF88"), "FF88");
    }

    #[test]
    fn overlapping_toggles_nest() {
        assert_eq!(html("\x02a\x1db\x02c\x1d"), "<b>a<i>b</i></b><i>c</i>");
        assert_eq!(
            html("\x02a\x0304b\x02c\x03d"),
            r##"<b>a<font data-mx-color="#ff0000">b</font></b><font data-mx-color="#ff0000">c</font>d"##
        );
        assert_well_formed(&html("\x02\x1d\x1fa\x02b\x1dc\x1fd"));
    }

    #[test]
    fn random_codes_give_well_formed_html() {
        let pieces = [
            "\x02",
            "\x1d",
            "\x1f",
            "\x1e",
            "\x11",
            "\x16",
            "\x0f",
            "\x03",
            "\x034",
            "\x0304,12",
            "\x04ff0000",
            "a",
            "b c",
            "<",
            "&",
            "5",
            ",",
            "\n",
            "é",
        ];
        let mut seed: u64 = 7;
        for _ in 0..2_000 {
            let mut text = String::new();
            for _ in 0..12 {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                text.push_str(pieces[(seed >> 33) as usize % pieces.len()]);
            }
            if let Some(html) = irc_to_html(&text) {
                assert_well_formed(&html);
            }
        }
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            html("\x02<script>alert('x')</script>\x02 & co"),
            "<b>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</b> &amp; co"
        );
        assert_eq!(irc_to_html("<script>"), None);
    }

    #[test]
    fn line_breaks_become_br() {
        assert_eq!(html("\x02a\nb\x02"), "<b>a<br>b</b>");
    }

    #[test]
    fn plain_text_gives_none() {
        assert_eq!(irc_to_html("just text"), None);
        assert_eq!(irc_to_html(""), None);
        // Formatting around no text formats nothing.
        assert_eq!(irc_to_html("a\x02\x02b\x0f"), None);
        assert_eq!(strip_formatting("just text"), "just text");
    }

    #[test]
    fn utf8_survives() {
        let text = "\x02héllo 😀\x02 \x0304漢字\x03 ok";
        assert_eq!(
            html(text),
            r##"<b>héllo 😀</b> <font data-mx-color="#ff0000">漢字</font> ok"##
        );
        assert_eq!(strip_formatting(text), "héllo 😀 漢字 ok");
        assert_eq!(irc("<b>日本語</b> 🎉"), "\x02日本語\x02 🎉");
    }

    #[test]
    fn strip_removes_every_code() {
        assert_eq!(
            strip_formatting("\x02b\x02\x1di\x1f\x1e\x11\x16\x0f\x0304,05c\x03\x04aabbcc,ddeeffd"),
            "bicd"
        );
    }

    #[test]
    fn round_trip_keeps_formatting() {
        let original = r##"<b>bold</b> <i>italic</i> <u>under</u> <del>strike</del> <font data-mx-color="#ff0000">red</font> <font data-mx-color="#ffffff" data-mx-bg-color="#000000">inverse</font> <b><i>both</i></b>"##;
        let text = irc(original);
        assert_eq!(irc_to_html(&text).as_deref(), Some(original));
        assert_eq!(
            strip_formatting(&text),
            "bold italic under strike red inverse both"
        );
    }

    #[test]
    fn round_trip_with_nesting_and_off_palette_colours() {
        let text = irc(r##"<b>a <i>b <font color="#fe0102">c</font></i> d</b>"##);
        assert_eq!(
            irc_to_html(&text).as_deref(),
            Some(r##"<b>a <i>b <font data-mx-color="#ff0000">c</font></i> d</b>"##)
        );
    }
}
