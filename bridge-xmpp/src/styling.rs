//! Matrix HTML as XMPP message styling (XEP-0393): the plain-text markup XMPP clients
//! show as formatting (`*bold*`, `_italic_`, `~strike~`, `` `code` ``, ```` ``` ```` blocks
//! and `> ` quotes), and which reads well where it is not shown.

use bridge_core::format::TextMarkup;

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
}
