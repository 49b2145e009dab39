//! XHTML-IM (XEP-0071), both ways: Matrix HTML rebuilt as the XHTML body XMPP clients
//! render, and an XMPP message's XHTML read back into Matrix HTML. XML is only ever built
//! with minidom; what comes in is walked element by element, its text escaped, and the
//! result sanitized as Matrix HTML.

use bridge_core::format::{HtmlNode, escape_html, html_tree, sanitize_html};
use tokio_xmpp::minidom::{Element, Node, rxml};
use tokio_xmpp::parsers::ns;

/// How deep incoming XHTML is followed before the rest is taken as text.
const MAX_DEPTH: usize = 100;

/// The XHTML-IM element of a Matrix message's HTML, or `None` if it has no content.
pub fn from_matrix_html(html: &str) -> Option<Element> {
    let children: Vec<Node> = html_tree(html).iter().flat_map(xhtml_nodes).collect();
    if children.is_empty() {
        return None;
    }
    let body = Element::builder("body", ns::XHTML)
        .append_all(children)
        .build();
    Some(Element::builder("html", ns::XHTML_IM).append(body).build())
}

/// Matrix HTML for the XHTML-IM element of an XMPP message (its first body), sanitized;
/// `None` if it is no XHTML-IM or has no content.
pub fn to_matrix_html(html_im: &Element) -> Option<String> {
    if !html_im.is("html", ns::XHTML_IM) {
        return None;
    }
    let body = html_im.children().find(|c| c.is("body", ns::XHTML))?;
    let mut html = String::new();
    for node in body.nodes() {
        write_html(node, 0, &mut html);
    }
    let html = sanitize_html(&html);
    (!html.trim().is_empty()).then_some(html)
}

/// One node of Matrix HTML as XHTML-IM nodes: the elements XEP-0071 recommends, with
/// inline styles for what it has no element for.
fn xhtml_nodes(node: &HtmlNode) -> Vec<Node> {
    let (name, attrs, children) = match node {
        HtmlNode::Text(text) => return vec![Node::Text(text.clone())],
        HtmlNode::Element {
            name,
            attrs,
            children,
        } => (name.as_str(), attrs, children),
    };
    let inner = || children.iter().flat_map(xhtml_nodes).collect::<Vec<_>>();
    let element = |tag: &str| Element::builder(tag, ns::XHTML).append_all(inner());
    let styled =
        |tag: &str, style: &str| element(tag).attr(rxml::xml_ncname!("style").to_owned(), style);
    let built = match name {
        "b" | "strong" => element("strong"),
        "i" | "em" => element("em"),
        "u" => styled("span", "text-decoration: underline"),
        "del" | "s" | "strike" => styled("span", "text-decoration: line-through"),
        "code" => styled("span", "font-family: monospace"),
        "pre" => styled("p", "font-family: monospace; white-space: pre-wrap"),
        "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => Element::builder("p", ns::XHTML).append(
            Element::builder("strong", ns::XHTML)
                .append_all(inner())
                .build(),
        ),
        "p" | "blockquote" | "ul" | "ol" | "li" => element(name),
        "br" => Element::builder("br", ns::XHTML),
        "a" => match attrs.iter().find(|(key, _)| key == "href") {
            Some((_, href)) => {
                element("a").attr(rxml::xml_ncname!("href").to_owned(), href.as_str())
            }
            None => return inner(),
        },
        // An image is in the message as its file; its alt text says what it was.
        "img" => {
            let alt = attrs.iter().find(|(key, _)| key == "alt");
            return alt
                .map(|(_, alt)| Node::Text(alt.clone()))
                .into_iter()
                .collect();
        }
        _ => return inner(),
    };
    vec![Node::Element(built.build())]
}

/// An XHTML-IM node as Matrix HTML: the elements Matrix has, styles as the elements that
/// mean the same, text escaped, anything else by its content.
fn write_html(node: &Node, depth: usize, out: &mut String) {
    let element = match node {
        Node::Text(text) => {
            out.push_str(&escape_html(text));
            return;
        }
        Node::Element(element) => element,
    };
    if depth > MAX_DEPTH {
        out.push_str(&escape_html(&all_text(element)));
        return;
    }
    let style = element
        .attr("style")
        .unwrap_or_default()
        .to_ascii_lowercase();
    let tag = match element.name() {
        "strong" => Some("strong"),
        "em" | "cite" => Some("em"),
        "p" | "blockquote" | "ul" | "ol" | "li" => Some(element.name()),
        "br" => {
            out.push_str("<br>");
            return;
        }
        "span" if style.contains("line-through") => Some("del"),
        "span" if style.contains("underline") => Some("u"),
        "span" if style.contains("bold") => Some("strong"),
        "span" if style.contains("italic") => Some("em"),
        "span" if style.contains("monospace") => Some("code"),
        _ => None,
    };
    let open = match (element.name(), tag) {
        ("a", _) => element
            .attr("href")
            .map(|href| format!("<a href=\"{}\">", escape_html(href))),
        (_, Some(tag)) => Some(format!("<{tag}>")),
        _ => None,
    };
    if let Some(open) = &open {
        out.push_str(open);
    }
    if element.name() == "img" {
        if let Some(alt) = element.attr("alt") {
            out.push_str(&escape_html(alt));
        }
    } else {
        for child in element.nodes() {
            write_html(child, depth + 1, out);
        }
    }
    if open.is_some() {
        out.push_str(&format!("</{}>", tag.unwrap_or("a")));
    }
}

/// The text of `element` and everything in it, without recursion.
fn all_text(element: &Element) -> String {
    let mut text = String::new();
    let mut stack: Vec<&Node> = element.nodes().rev().collect();
    while let Some(node) = stack.pop() {
        match node {
            Node::Text(t) => text.push_str(t),
            Node::Element(e) => stack.extend(e.nodes().rev()),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn matrix_html_becomes_xhtml_im() {
        let html = "<b>bold</b> <u>under</u> <a href=\"https://x.org/?a=1&amp;b=2\">link</a> \
                    <code>x&lt;y</code><mx-reply>hidden</mx-reply><script>s()</script>";
        let xhtml = from_matrix_html(html).unwrap();
        let xml = String::from(&xhtml);
        assert!(xml.contains("<strong>bold</strong>"), "{xml}");
        assert!(
            xml.contains("<span style='text-decoration: underline'>under</span>"),
            "{xml}"
        );
        assert!(xml.contains("href='https://x.org/?a=1&amp;b=2'"), "{xml}");
        assert!(xml.contains(">x&lt;y</span>"), "{xml}");
        assert!(!xml.contains("hidden") && !xml.contains("s()"), "{xml}");
        assert_eq!(from_matrix_html("<mx-reply>only</mx-reply>"), None);
    }

    #[test]
    fn xhtml_im_becomes_sanitized_matrix_html() {
        let xhtml = parse(
            "<html xmlns='http://jabber.org/protocol/xhtml-im'>\
             <body xmlns='http://www.w3.org/1999/xhtml'>\
             <p><strong>hi</strong> <span style='text-decoration: line-through'>no</span> \
             &lt;script&gt;x&lt;/script&gt; <a href='javascript:alert(1)'>bad</a> \
             <a href='https://x.org'>ok</a><img src='https://x.org/i.png' alt='pic'/></p>\
             <unknown><em>kept</em></unknown></body></html>",
        );
        let html = to_matrix_html(&xhtml).unwrap();
        assert_eq!(
            html,
            "<p><strong>hi</strong> <del>no</del> &lt;script&gt;x&lt;/script&gt; \
             <a>bad</a> <a href=\"https://x.org\">ok</a>pic</p><em>kept</em>"
        );
        assert_eq!(to_matrix_html(&parse("<html xmlns='urn:other'/>")), None);
    }

    #[test]
    fn deep_xhtml_stays_bounded() {
        let xml = format!(
            "<html xmlns='http://jabber.org/protocol/xhtml-im'><body xmlns='http://www.w3.org/1999/xhtml'>{}deep{}</body></html>",
            "<em>".repeat(500),
            "</em>".repeat(500)
        );
        let html = to_matrix_html(&parse(&xml)).unwrap();
        assert!(html.contains("deep"));
    }
}
