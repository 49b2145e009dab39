//! Removing reply fallbacks, the quoted copy of the original message that
//! older clients put in front of a reply.
//!
//! Only call these for events that are replies (`m.relates_to.m.in_reply_to`
//! is set): a plain message may itself start with a quote.

use super::dom::{Fragment, REPLY_TAG, element_name};

/// Strips the reply fallback from a plain-text `body`.
///
/// The fallback is the leading block of lines that start with `> ` or are
/// exactly `>`, plus the blank line that follows it. A body that does not
/// start with such a line is returned unchanged.
pub fn strip_reply_fallback_text(body: &str) -> &str {
    let mut rest = body;
    let mut quoted_any = false;
    while !rest.is_empty() {
        let (line, after) = split_first_line(rest);
        if !(line.starts_with("> ") || line == ">") {
            break;
        }
        quoted_any = true;
        rest = after;
    }
    if !quoted_any {
        return body;
    }
    let (line, after) = split_first_line(rest);
    if line.is_empty() { after } else { rest }
}

/// Splits `text` into its first line, without the line ending, and the rest.
fn split_first_line(text: &str) -> (&str, &str) {
    let (line, rest) = text.split_once('\n').unwrap_or((text, ""));
    (line.strip_suffix('\r').unwrap_or(line), rest)
}

/// Strips every `<mx-reply>` element, with its content, from `formatted_body`.
///
/// The HTML is parsed rather than searched, so nested or unclosed
/// `<mx-reply>` tags are handled as a client would handle them. The rest of
/// the HTML is re-serialized, which may normalize it (quoting of attributes,
/// closing of unclosed tags).
pub fn strip_reply_fallback_html(html: &str) -> String {
    let fragment = Fragment::parse(html);
    let mut stack = vec![fragment.root()];
    while let Some(node) = stack.pop() {
        node.children
            .borrow_mut()
            .retain(|child| element_name(child) != Some(REPLY_TAG));
        stack.extend(node.children.borrow().iter().cloned());
    }
    fragment.to_html()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_text_fallback() {
        let body = "> <@alice:example.org> hello\n> second line\n>\n> third\n\nmy answer\nmore";
        assert_eq!(strip_reply_fallback_text(body), "my answer\nmore");
    }

    #[test]
    fn strips_text_fallback_with_crlf() {
        let body = "> <@alice:example.org> hello\r\n\r\nanswer";
        assert_eq!(strip_reply_fallback_text(body), "answer");
    }

    #[test]
    fn keeps_text_without_fallback() {
        assert_eq!(
            strip_reply_fallback_text("hello\n> not a fallback"),
            "hello\n> not a fallback"
        );
        assert_eq!(strip_reply_fallback_text(">not quoted"), ">not quoted");
        assert_eq!(strip_reply_fallback_text(""), "");
    }

    #[test]
    fn only_one_blank_line_is_removed() {
        assert_eq!(strip_reply_fallback_text("> q\n\n\nanswer"), "\nanswer");
        assert_eq!(strip_reply_fallback_text("> q\nanswer"), "answer");
        assert_eq!(strip_reply_fallback_text("> q"), "");
    }

    #[test]
    fn strips_html_fallback() {
        let html = concat!(
            r#"<mx-reply><blockquote><a href="https://matrix.to/#/!r:x/$e">In reply to</a> "#,
            r#"<a href="https://matrix.to/#/@alice:x">@alice:x</a><br>hello</blockquote></mx-reply>"#,
            "my <b>answer</b>",
        );
        assert_eq!(strip_reply_fallback_html(html), "my <b>answer</b>");
    }

    #[test]
    fn strips_nested_and_unclosed_fallbacks() {
        let html = "<mx-reply>a<mx-reply>b</mx-reply>c</mx-reply>answer";
        assert_eq!(strip_reply_fallback_html(html), "answer");
        // An unclosed fallback swallows the rest, as it would in a client.
        assert_eq!(
            strip_reply_fallback_html("before<mx-reply>quoted"),
            "before"
        );
        // A stray end tag is ignored.
        assert_eq!(strip_reply_fallback_html("a</mx-reply>b"), "ab");
    }

    #[test]
    fn keeps_html_without_fallback() {
        let html = r#"<p>hello <a href="https://example.org">there</a></p>"#;
        assert_eq!(strip_reply_fallback_html(html), html);
    }
}
