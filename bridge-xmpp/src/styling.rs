//! XMPP message styling (XEP-0393), both ways: the plain-text markup XMPP clients show
//! as formatting (`*bold*`, `_italic_`, `~strike~`, `` `code` ``, ```` ``` ```` blocks
//! and `> ` quotes), written from Matrix HTML and read back into it.

use bridge_core::format::{TextMarkup, escape_html};

/// Matrix HTML written with XEP-0393 styling.
#[derive(Debug, Clone, Copy, Default)]
pub struct Styling;

/// `text` between `mark`s. A styling span must start and end on a character that is not
/// white space, so the white space around the text stays outside the marks.
fn span(text: &str, mark: &str) -> String {
    let core = text.trim();
    if core.is_empty() {
        return text.to_owned();
    }
    let start = text.len() - text.trim_start().len();
    let end = start + core.len();
    format!("{}{mark}{core}{mark}{}", &text[..start], &text[end..])
}

impl TextMarkup for Styling {
    fn bold(&self, text: &str) -> String {
        span(text, "*")
    }

    fn italic(&self, text: &str) -> String {
        span(text, "_")
    }

    fn strikethrough(&self, text: &str) -> String {
        span(text, "~")
    }

    fn inline_code(&self, code: &str) -> String {
        span(code, "`")
    }

    fn code_block(&self, code: &str, language: Option<&str>) -> String {
        format!("```{}\n{code}\n```", language.unwrap_or_default())
    }
}

/// How deep quotes nest before the rest is taken as plain text.
const MAX_QUOTE_DEPTH: usize = 16;

/// The Matrix HTML of a styled message body, or `None` when it has no styling (the
/// plain body says it all). The directives stay in the plain body, as XEP-0393 keeps
/// them; the HTML shows their effect instead.
pub fn styling_to_html(body: &str) -> Option<String> {
    let lines: Vec<&str> = body.split('\n').collect();
    let html = blocks(&lines, 0);
    (html != escape_html(body).replace('\n', "<br>")).then_some(html)
}

/// Lines as HTML: preformatted blocks, quotes, and styled lines joined by `<br>`.
fn blocks(lines: &[&str], depth: usize) -> String {
    let mut out = String::new();
    let mut i = 0;
    let mut pending_break = false;
    let line_break = |out: &mut String, pending: &mut bool| {
        if *pending {
            out.push_str("<br>");
        }
        *pending = true;
    };
    while i < lines.len() {
        let line = lines[i];
        if line.starts_with("```") {
            // To the closing line, or the end of the message.
            let end = lines[i + 1..]
                .iter()
                .position(|l| l.trim_end() == "```")
                .map_or(lines.len(), |p| i + 1 + p);
            let code = lines[i + 1..end].join("\n");
            out.push_str(&format!("<pre><code>{}</code></pre>", escape_html(&code)));
            pending_break = false;
            i = end + 1;
        } else if line.starts_with('>') && depth < MAX_QUOTE_DEPTH {
            let end = lines[i..]
                .iter()
                .position(|l| !l.starts_with('>'))
                .map_or(lines.len(), |p| i + p);
            let quoted: Vec<&str> = lines[i..end]
                .iter()
                .map(|l| {
                    let l = &l[1..];
                    l.strip_prefix(' ').unwrap_or(l)
                })
                .collect();
            out.push_str(&format!(
                "<blockquote>{}</blockquote>",
                blocks(&quoted, depth + 1)
            ));
            pending_break = false;
            i = end;
        } else {
            line_break(&mut out, &mut pending_break);
            out.push_str(&spans(line));
            i += 1;
        }
    }
    out
}

/// One line's styling spans as HTML: a directive opens at the start or after white
/// space, before a character that is not white space, and closes at the next same
/// directive after one that is not; a span holds at least one character, and nothing
/// is styled inside `` ` ``.
fn spans(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    // Where each directive may next close, from every position: one pass each, so that
    // a line of openings that never close costs no more than its length.
    let next_close = |directive: char| {
        let mut next = vec![None; chars.len() + 1];
        for j in (1..chars.len()).rev() {
            next[j] = if chars[j] == directive && !chars[j - 1].is_whitespace() {
                Some(j)
            } else {
                next[j + 1]
            };
        }
        next
    };
    let closes: Vec<(char, Vec<Option<usize>>)> =
        "*_~`".chars().map(|d| (d, next_close(d))).collect();
    let mut out = String::new();
    let mut plain = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let tag = match c {
            '*' => Some("strong"),
            '_' => Some("em"),
            '~' => Some("del"),
            '`' => Some("code"),
            _ => None,
        };
        let opens = tag.is_some()
            && (i == 0 || chars[i - 1].is_whitespace() || "*_~`".contains(chars[i - 1]))
            && chars
                .get(i + 1)
                .is_some_and(|next| !next.is_whitespace() && *next != c);
        let close = opens
            .then(|| {
                let (_, next) = closes.iter().find(|(d, _)| *d == c)?;
                next.get(i + 2).copied().flatten()
            })
            .flatten();
        if let (Some(tag), Some(close)) = (tag, close) {
            out.push_str(&escape_html(&plain));
            plain.clear();
            let inner: String = chars[i + 1..close].iter().collect();
            let inner = if c == '`' {
                escape_html(&inner)
            } else {
                spans(&inner)
            };
            out.push_str(&format!("<{tag}>{inner}</{tag}>"));
            i = close + 1;
        } else {
            plain.push(c);
            i += 1;
        }
    }
    out.push_str(&escape_html(&plain));
    out
}

#[cfg(test)]
mod tests {
    use bridge_core::format::html_to_text;

    use super::*;

    #[test]
    fn html_becomes_styling() {
        let cases = [
            ("<b>bold</b> and <i>it</i>", "*bold* and _it_"),
            ("<del>gone</del> <code>x = 1</code>", "~gone~ `x = 1`"),
            ("x<b> spaced </b>end", "x *spaced* end"),
            (
                "<pre><code class=\"language-rust\">fn main() {}\n</code></pre>",
                "```rust\nfn main() {}\n```",
            ),
            ("<blockquote>quoted</blockquote>after", "> quoted\n\nafter"),
            ("<b></b>empty", "empty"),
        ];
        for (html, text) in cases {
            assert_eq!(html_to_text(html, &Styling), text, "{html}");
        }
    }

    #[test]
    fn styling_becomes_html() {
        let cases = [
            (
                "*bold* and _it_",
                Some("<strong>bold</strong> and <em>it</em>"),
            ),
            (
                "~gone~ `x = *1*`",
                Some("<del>gone</del> <code>x = *1*</code>"),
            ),
            ("*_both_*", Some("<strong><em>both</em></strong>")),
            ("snake_case_name and 2 * 3 * 4", None),
            ("* not bold*", None),
            ("**", None),
            (
                "a <b>tag</b> & *more*",
                Some("a &lt;b&gt;tag&lt;/b&gt; &amp; <strong>more</strong>"),
            ),
            (
                "```rust\nfn main() {}\n```\nafter",
                Some("<pre><code>fn main() {}</code></pre>after"),
            ),
            (
                "> quoted\n>> deeper\nafter",
                Some("<blockquote>quoted<blockquote>deeper</blockquote></blockquote>after"),
            ),
            ("line one\nline two", None),
            (
                "```\nunclosed *x*",
                Some("<pre><code>unclosed *x*</code></pre>"),
            ),
        ];
        for (body, html) in cases {
            assert_eq!(styling_to_html(body).as_deref(), html, "{body}");
        }
        // Hostile nesting stays bounded, and openings that never close stay cheap.
        let deep = ">".repeat(10_000) + " x";
        assert!(styling_to_html(&deep).is_some());
        let unclosed = "*a ".repeat(100_000);
        assert_eq!(styling_to_html(&unclosed), None);
    }
}
