//! Sanitizing `formatted_body` HTML down to the subset the Matrix spec allows.
//!
//! The allow-list is the one the client-server API gives for `m.room.message`
//! (section "m.room.message msgtypes"); anything outside it is dropped, and
//! reply fallbacks (`<mx-reply>`) are removed with their content because
//! clients are meant to render replies from the relation, not the fallback.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use ammonia::{Builder, UrlRelative};

/// Tags the spec allows in `formatted_body`.
const ALLOWED_TAGS: &[&str] = &[
    "font",
    "del",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "blockquote",
    "p",
    "a",
    "ul",
    "ol",
    "sup",
    "sub",
    "li",
    "b",
    "i",
    "u",
    "strong",
    "em",
    "s",
    "code",
    "hr",
    "br",
    "div",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "caption",
    "pre",
    "span",
    "img",
    "details",
    "summary",
];

/// Attributes the spec allows, per tag.
const ALLOWED_ATTRIBUTES: &[(&str, &[&str])] = &[
    ("font", &["data-mx-bg-color", "data-mx-color", "color"]),
    (
        "span",
        &["data-mx-bg-color", "data-mx-color", "data-mx-spoiler"],
    ),
    ("a", &["name", "target", "href"]),
    ("img", &["width", "height", "alt", "title", "src"]),
    ("ol", &["start"]),
    ("code", &["class"]),
];

/// Tags dropped together with everything inside them. The rest of the
/// disallowed tags are unwrapped, keeping their text.
const DROPPED_WITH_CONTENT: &[&str] = &["mx-reply", "script", "style"];

/// URL schemes ammonia lets through. `mxc` is here only so that image sources
/// survive; [`filter_attribute`] then keeps each scheme to its own attribute.
const URL_SCHEMES: &[&str] = &["https", "http", "ftp", "mailto", "magnet", "matrix", "mxc"];

static SANITIZER: LazyLock<Builder<'static>> = LazyLock::new(|| {
    let tag_attributes: HashMap<&str, HashSet<&str>> = ALLOWED_ATTRIBUTES
        .iter()
        .map(|(tag, attrs)| (*tag, attrs.iter().copied().collect()))
        .collect();
    let mut builder = Builder::empty();
    builder
        .tags(ALLOWED_TAGS.iter().copied().collect())
        .clean_content_tags(DROPPED_WITH_CONTENT.iter().copied().collect())
        .tag_attributes(tag_attributes)
        .generic_attributes(HashSet::new())
        .url_schemes(URL_SCHEMES.iter().copied().collect())
        // The spec forbids relative links: there is no page to resolve them against.
        .url_relative(UrlRelative::Deny)
        // ammonia adds `rel` by default, which the spec does not allow.
        .link_rel(None)
        .strip_comments(true)
        .attribute_filter(filter_attribute);
    builder
});

/// Sanitizes HTML to the subset the Matrix spec allows in `formatted_body`.
///
/// Allowed tags and attributes are kept; other tags are unwrapped (their text
/// stays), `<script>`, `<style>` and `<mx-reply>` are dropped with their
/// content, and links keep only the `https`, `http`, `ftp`, `mailto`, `magnet`
/// and `matrix` schemes. Images keep their `src` only when it is an `mxc://`
/// URI; an image with any other source stays as an `<img>` without `src`, so
/// its `alt` text is still there for clients that show it. `<code>` keeps only
/// `language-*` classes, `data-mx-color` and `data-mx-bg-color` only `#rrggbb`
/// values, and `<font color>` only those or colour names.
pub fn sanitize_html(html: &str) -> String {
    SANITIZER.clean(html).to_string()
}

/// Checks the attribute values that a plain allow-list cannot express.
fn filter_attribute<'u>(element: &str, attribute: &str, value: &'u str) -> Option<Cow<'u, str>> {
    match (element, attribute) {
        ("img", "src") => is_mxc_uri(value).then_some(Cow::Borrowed(value)),
        // Media URIs are not links: a client cannot open them without auth.
        ("a", "href") => (!has_scheme(value, "mxc")).then_some(Cow::Borrowed(value)),
        ("code", "class") => {
            let languages: Vec<&str> = value
                .split_ascii_whitespace()
                .filter(|class| class.starts_with("language-"))
                .collect();
            (!languages.is_empty()).then(|| Cow::Owned(languages.join(" ")))
        }
        (_, "data-mx-color" | "data-mx-bg-color") => {
            is_hex_color(value).then_some(Cow::Borrowed(value))
        }
        // The legacy HTML attribute also takes colour names such as `red`.
        ("font", "color") => {
            (is_hex_color(value) || is_color_name(value)).then_some(Cow::Borrowed(value))
        }
        _ => Some(Cow::Borrowed(value)),
    }
}

/// Whether `url` starts with `scheme:`, ignoring ASCII case as URL schemes do.
fn has_scheme(url: &str, scheme: &str) -> bool {
    trim_url(url)
        .split_once(':')
        .is_some_and(|(found, _)| found.eq_ignore_ascii_case(scheme))
}

/// Whether `url` is an `mxc://` URI, the only image source the spec allows.
fn is_mxc_uri(url: &str) -> bool {
    trim_url(url)
        .get(..6)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("mxc://"))
}

/// Skips what URL parsers skip before a URL (controls and spaces), so these
/// checks see the same scheme as ammonia's own URL check did.
fn trim_url(url: &str) -> &str {
    url.trim_start_matches(|c: char| c <= ' ')
}

/// Whether `value` could be an HTML colour name; letters only, so it cannot
/// smuggle anything else into the attribute.
fn is_color_name(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphabetic())
}

/// Whether `value` is a `#rrggbb` colour, the only form the spec allows for
/// `data-mx-color` and `data-mx-bg-color`.
fn is_hex_color(value: &str) -> bool {
    value
        .strip_prefix('#')
        .is_some_and(|hex| hex.len() == 6 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_script_and_style_with_content() {
        let out = sanitize_html("a<script>alert(1)</script><style>p{}</style>b");
        assert_eq!(out, "ab");
    }

    #[test]
    fn removes_event_handlers() {
        let out = sanitize_html(r#"<b onclick="alert(1)" onmouseover="x">hi</b>"#);
        assert_eq!(out, "<b>hi</b>");
    }

    #[test]
    fn removes_javascript_links() {
        let out = sanitize_html(
            r#"<a href="javascript:alert(1)">x</a><a href="JaVaScRiPt:alert(1)">y</a>"#,
        );
        assert_eq!(out, "<a>x</a><a>y</a>");
    }

    #[test]
    fn keeps_allowed_links() {
        let html = r#"<a href="https://example.org" target="_blank">x</a><a href="mailto:a@b.c">m</a><a href="matrix:u/alice:example.org">a</a>"#;
        assert_eq!(sanitize_html(html), html);
    }

    #[test]
    fn removes_relative_and_unknown_scheme_links() {
        let out = sanitize_html(r#"<a href="/etc/passwd">x</a><a href="tel:123">y</a>"#);
        assert_eq!(out, "<a>x</a><a>y</a>");
    }

    #[test]
    fn keeps_allowed_tags_and_colours() {
        let html = concat!(
            r#"<p><strong>b</strong> <em>i</em> <del>d</del> <u>u</u> "#,
            r##"<span data-mx-color="#ff0000" data-mx-bg-color="#00FF00">c</span> "##,
            r##"<font color="#123456">f</font> <span data-mx-spoiler="why">s</span></p>"##,
            r#"<ol start="3"><li>x</li></ol><blockquote>q</blockquote>"#,
            r#"<details><summary>s</summary>d</details><hr><h1>h</h1>"#,
        );
        assert_eq!(sanitize_html(html), html);
    }

    #[test]
    fn drops_colours_that_are_not_hex() {
        let out = sanitize_html(r#"<span data-mx-color="red; background: url(x)">c</span>"#);
        assert_eq!(out, "<span>c</span>");
        let out = sanitize_html(r#"<span data-mx-bg-color="red">c</span>"#);
        assert_eq!(out, "<span>c</span>");
        let out = sanitize_html(r#"<font color="red">c</font><font color="red;x:y">d</font>"#);
        assert_eq!(out, r#"<font color="red">c</font><font>d</font>"#);
    }

    #[test]
    fn unwraps_disallowed_tags_and_attributes() {
        let out =
            sanitize_html(r#"<section style="color:red" id="x"><iframe></iframe>t</section>"#);
        assert_eq!(out, "t");
        let out = sanitize_html(r#"<p class="big" style="x">t</p>"#);
        assert_eq!(out, "<p>t</p>");
    }

    #[test]
    fn images_keep_only_mxc_sources() {
        let out = sanitize_html(r#"<img src="https://evil.example/track.png" alt="a">"#);
        assert_eq!(out, r#"<img alt="a">"#);
        let html = r#"<img src="mxc://example.org/abc" alt="cat" width="32" height="32">"#;
        assert_eq!(sanitize_html(html), html);
        let out = sanitize_html(r#"<img src="mxc:example.org/abc">"#);
        assert_eq!(out, "<img>");
    }

    #[test]
    fn links_cannot_point_at_media() {
        let out = sanitize_html(r#"<a href="mxc://example.org/abc">x</a>"#);
        assert_eq!(out, "<a>x</a>");
    }

    #[test]
    fn code_keeps_only_language_classes() {
        let out = sanitize_html(r#"<pre><code class="hljs language-rust evil">fn</code></pre>"#);
        assert_eq!(out, r#"<pre><code class="language-rust">fn</code></pre>"#);
        let out = sanitize_html(r#"<code class="evil">x</code>"#);
        assert_eq!(out, "<code>x</code>");
    }

    #[test]
    fn drops_reply_fallback_with_content() {
        let html = "<mx-reply><blockquote><a href=\"https://matrix.to/#/!r:x/$e\">In reply to</a> quoted</blockquote></mx-reply>answer";
        assert_eq!(sanitize_html(html), "answer");
    }

    #[test]
    fn removes_comments() {
        assert_eq!(sanitize_html("a<!-- secret -->b"), "ab");
    }

    #[test]
    fn survives_deep_nesting() {
        let html = "<b>".repeat(20_000) + "x";
        assert!(sanitize_html(&html).contains('x'));
    }
}
