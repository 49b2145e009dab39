//! Turning plain text from a remote network into Matrix HTML.

/// Escapes the five characters that are special in HTML text and attributes.
///
/// The result is safe both between tags and inside a quoted attribute value.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Converts plain text to Matrix HTML: escapes it and turns each line break
/// (`\n` or `\r\n`) into `<br>`.
pub fn text_to_html(text: &str) -> String {
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| escape_html(line.strip_suffix('\r').unwrap_or(line)))
        .collect();
    lines.join("<br>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_all_special_characters() {
        assert_eq!(
            escape_html(r#"a & b < c > d " e ' f"#),
            "a &amp; b &lt; c &gt; d &quot; e &#39; f"
        );
    }

    #[test]
    fn escapes_script() {
        assert_eq!(
            text_to_html("<script>alert('x')</script>"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
        );
    }

    #[test]
    fn newlines_become_br() {
        assert_eq!(text_to_html("a\nb\r\nc"), "a<br>b<br>c");
        assert_eq!(text_to_html("a\n\nb"), "a<br><br>b");
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(text_to_html("hello world"), "hello world");
        assert_eq!(text_to_html(""), "");
    }
}
