//! Parsing Matrix HTML into a tree that the other formatting helpers walk.
//!
//! Everything that reads `formatted_body` goes through here, so malformed input
//! (unclosed tags, misnested tags, stray entities) is repaired once, the way a
//! browser would, by html5ever.

use html5ever::serialize::{SerializeOpts, serialize};
use html5ever::tendril::TendrilSink;
use html5ever::{ParseOpts, QualName, local_name, ns, parse_fragment};
use markup5ever_rcdom::{Handle, NodeData, RcDom, SerializableHandle};

/// The element that wraps a reply fallback in `formatted_body`.
pub(crate) const REPLY_TAG: &str = "mx-reply";

/// How deep the walkers recurse before falling back to flat text.
///
/// The spec asks clients to limit nesting to 100 levels, and it keeps a hostile
/// message from exhausting the stack.
pub(crate) const MAX_DEPTH: usize = 100;

/// A parsed HTML fragment.
///
/// The tree is kept inside its `RcDom` because dropping the `RcDom` empties
/// every node of the tree, even nodes still referenced elsewhere.
pub(crate) struct Fragment {
    dom: RcDom,
}

impl Fragment {
    /// Parses `html` as the content of a `<body>`, as a client displays it.
    pub(crate) fn parse(html: &str) -> Self {
        let context = QualName::new(None, ns!(html), local_name!("body"));
        let dom = parse_fragment(
            RcDom::default(),
            ParseOpts::default(),
            context,
            vec![],
            false,
        )
        .one(html);
        Self { dom }
    }

    /// The element whose children are the fragment's top-level nodes.
    pub(crate) fn root(&self) -> Handle {
        // A fragment parse always creates one synthetic `<html>` element under
        // the document; falling back to the document keeps this total.
        let first = self.dom.document.children.borrow().first().cloned();
        first.unwrap_or_else(|| self.dom.document.clone())
    }

    /// Serializes the fragment's top-level nodes back to HTML.
    pub(crate) fn to_html(&self) -> String {
        let mut out = Vec::new();
        let root: SerializableHandle = self.root().into();
        // Writing to a Vec cannot fail; an error would only mean partial output.
        if serialize(&mut out, &root, SerializeOpts::default()).is_err() {
            out.clear();
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

/// The local name of an element, or `None` for text and other nodes.
pub(crate) fn element_name(node: &Handle) -> Option<&str> {
    match &node.data {
        NodeData::Element { name, .. } => Some(&name.local),
        _ => None,
    }
}

/// The value of an element's attribute.
pub(crate) fn attr(node: &Handle, attr_name: &str) -> Option<String> {
    match &node.data {
        NodeData::Element { attrs, .. } => attrs
            .borrow()
            .iter()
            .find(|a| &*a.name.local == attr_name)
            .map(|a| a.value.to_string()),
        _ => None,
    }
}

/// Whether the node is an element whose content is never shown as text.
pub(crate) fn is_hidden(node: &Handle) -> bool {
    matches!(
        element_name(node),
        Some(REPLY_TAG | "script" | "style" | "template")
    )
}

/// The text of `node` and all its descendants, whitespace untouched.
///
/// Iterative, so it is safe at any depth; hidden elements are skipped.
pub(crate) fn text_content(node: &Handle) -> String {
    let mut out = String::new();
    let mut stack = vec![node.clone()];
    while let Some(node) = stack.pop() {
        if let NodeData::Text { contents } = &node.data {
            out.push_str(&contents.borrow());
            continue;
        }
        if is_hidden(&node) {
            continue;
        }
        // Reversed so the first child is popped first.
        stack.extend(node.children.borrow().iter().rev().cloned());
    }
    out
}

/// Calls `visit` on every element under `root` in document order, skipping
/// reply fallbacks and their content.
pub(crate) fn for_each_element(root: &Handle, mut visit: impl FnMut(&Handle)) {
    let mut stack: Vec<Handle> = root.children.borrow().iter().rev().cloned().collect();
    while let Some(node) = stack.pop() {
        if element_name(&node).is_none() || element_name(&node) == Some(REPLY_TAG) {
            continue;
        }
        visit(&node);
        stack.extend(node.children.borrow().iter().rev().cloned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repairs_misnested_tags() {
        let fragment = Fragment::parse("<b><i>x</b></i>");
        assert_eq!(fragment.to_html(), "<b><i>x</i></b>");
    }

    #[test]
    fn text_content_decodes_entities_and_skips_hidden() {
        let fragment = Fragment::parse("a &amp; <mx-reply>r</mx-reply><script>s</script>b");
        assert_eq!(text_content(&fragment.root()), "a & b");
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let html = "<b>".repeat(20_000) + "x";
        let fragment = Fragment::parse(&html);
        assert_eq!(text_content(&fragment.root()), "x");
        let mut count = 0;
        for_each_element(&fragment.root(), |_| count += 1);
        assert!(count > 0);
    }
}
