//! Matrix HTML as a plain tree, for networks with rich markup of their own (XMPP's
//! XHTML-IM), which rebuild it with their own serializer rather than pass HTML text on.

use markup5ever_rcdom::{Handle, NodeData};

use super::dom::{Fragment, MAX_DEPTH, element_name, is_hidden};
use super::sanitize::sanitize_html;

/// A node of [`html_tree`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HtmlNode {
    /// Text, entities decoded.
    Text(String),
    /// An element the spec allows, with its attributes as the sanitizer left them.
    Element {
        /// The tag name, lowercase (`strong`, `a`).
        name: String,
        /// Its attributes (`href`).
        attrs: Vec<(String, String)>,
        /// What it holds.
        children: Vec<HtmlNode>,
    },
}

/// The top-level nodes of `html`, sanitized first (see [`sanitize_html`]), without the
/// reply fallback. Elements nested deeper than clients are asked to render are given as
/// their text.
pub fn html_tree(html: &str) -> Vec<HtmlNode> {
    let fragment = Fragment::parse(&sanitize_html(html));
    children(&fragment.root(), 0)
}

fn children(node: &Handle, depth: usize) -> Vec<HtmlNode> {
    node.children
        .borrow()
        .iter()
        .filter_map(|child| convert(child, depth + 1))
        .collect()
}

fn convert(node: &Handle, depth: usize) -> Option<HtmlNode> {
    match &node.data {
        NodeData::Text { contents } => Some(HtmlNode::Text(contents.borrow().to_string())),
        NodeData::Element { attrs, .. } => {
            if is_hidden(node) {
                return None;
            }
            if depth > MAX_DEPTH {
                return Some(HtmlNode::Text(super::dom::text_content(node)));
            }
            Some(HtmlNode::Element {
                name: element_name(node)?.to_owned(),
                attrs: attrs
                    .borrow()
                    .iter()
                    .map(|a| (a.name.local.to_string(), a.value.to_string()))
                    .collect(),
                children: children(node, depth),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> HtmlNode {
        HtmlNode::Text(t.to_owned())
    }

    #[test]
    fn gives_sanitized_elements_with_their_attributes_and_text() {
        let tree = html_tree(
            "<mx-reply>quoted</mx-reply><b>bold &amp; <a href=\"https://x.org\" onclick=\"e()\">x</a></b><script>s</script>",
        );
        assert_eq!(
            tree,
            [HtmlNode::Element {
                name: "b".to_owned(),
                attrs: vec![],
                children: vec![
                    text("bold & "),
                    HtmlNode::Element {
                        name: "a".to_owned(),
                        attrs: vec![("href".to_owned(), "https://x.org".to_owned())],
                        children: vec![text("x")],
                    },
                ],
            }]
        );
    }

    #[test]
    fn deep_nesting_becomes_text() {
        let html = "<b>".repeat(300) + "deep" + &"</b>".repeat(300);
        let mut node = &html_tree(&html)[0];
        let mut depth = 1;
        while let HtmlNode::Element { children, .. } = node {
            node = &children[0];
            depth += 1;
        }
        assert_eq!(node, &text("deep"));
        assert!(depth <= MAX_DEPTH + 2, "{depth}");
    }
}
