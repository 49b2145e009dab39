//! Rendering Matrix HTML as plain text for a remote network.
//!
//! The walk over the HTML is shared by every bridge; what bold, links,
//! quotes and the rest look like on the remote side is decided by a
//! [`TextMarkup`], so a network with its own markup (IRC control codes,
//! Markdown, BBCode) only overrides the hooks it has an answer for.

use markup5ever_rcdom::{Handle, NodeData};
use ruma::matrix_uri::MatrixId;
use ruma::{RoomOrAliasId, UserId};

use super::dom::{Fragment, MAX_DEPTH, attr, element_name, is_hidden, text_content};
use super::mention::parse_matrix_link;

/// How a remote network writes each construct of Matrix HTML.
///
/// Every hook receives text that is already rendered, including whatever the
/// hooks of nested elements produced and any line breaks, and returns it
/// wrapped in the network's markup. The defaults render plainly, as
/// [`PlainText`] shows them. Wrapping hooks are not called for empty text.
pub trait TextMarkup {
    /// `<b>` and `<strong>`. Default: the text unchanged.
    fn bold(&self, text: &str) -> String {
        text.to_owned()
    }

    /// `<i>` and `<em>`. Default: the text unchanged.
    fn italic(&self, text: &str) -> String {
        text.to_owned()
    }

    /// `<u>`. Default: the text unchanged.
    fn underline(&self, text: &str) -> String {
        text.to_owned()
    }

    /// `<s>`, `<del>` and `<strike>`. Default: the text unchanged.
    fn strikethrough(&self, text: &str) -> String {
        text.to_owned()
    }

    /// `<code>` outside a `<pre>`. Default: the code unchanged.
    fn inline_code(&self, code: &str) -> String {
        code.to_owned()
    }

    /// `<pre>`, with the language of its `<code class="language-…">` if any.
    /// `code` keeps its whitespace and line breaks, without the final line
    /// break. Default: the code unchanged, as its own paragraph.
    fn code_block(&self, code: &str, language: Option<&str>) -> String {
        let _ = language;
        code.to_owned()
    }

    /// A link that is not a Matrix mention. `text` may be empty.
    ///
    /// Default: `text` alone when it already shows the target (it equals
    /// `href`, or `href` is `mailto:` followed by it), `href` alone when
    /// `text` is empty, and `text (href)` otherwise.
    fn link(&self, text: &str, href: &str) -> String {
        if text.is_empty() {
            href.to_owned()
        } else if text == href || href.strip_prefix("mailto:") == Some(text) {
            text.to_owned()
        } else {
            format!("{text} ({href})")
        }
    }

    /// A link to a user (a mention pill). `text` is usually the display
    /// name and may be empty. Default: `text`, or the user id if it is empty.
    fn user_mention(&self, user: &UserId, text: &str) -> String {
        if text.is_empty() {
            user.to_string()
        } else {
            text.to_owned()
        }
    }

    /// A link to a room, by alias or id. `text` may be empty.
    ///
    /// Default: aliases are shown because a remote user can type them into a
    /// client: `text` when it is the alias, else `text (#alias:server)`.
    /// Room ids mean nothing to people, so only `text` is shown for them.
    /// Empty text falls back to the alias or id.
    fn room_mention(&self, room: &RoomOrAliasId, text: &str) -> String {
        if text.is_empty() {
            room.to_string()
        } else if room.is_room_id() || text == room.as_str() {
            text.to_owned()
        } else {
            format!("{text} ({room})")
        }
    }

    /// `<font>` or `<span>` with a colour, as `#rrggbb` strings from
    /// `data-mx-color` (or `color`) and `data-mx-bg-color`.
    /// Default: the text unchanged.
    fn color(&self, text: &str, foreground: Option<&str>, background: Option<&str>) -> String {
        let _ = (foreground, background);
        text.to_owned()
    }

    /// `<span data-mx-spoiler>`, with its reason if one is given.
    ///
    /// Default: `[spoiler] text`, or `[spoiler: reason] text`. A plain-text
    /// network cannot hide the text, so the label at least warns the reader
    /// before they reach it.
    fn spoiler(&self, text: &str, reason: Option<&str>) -> String {
        match reason {
            Some(reason) => format!("[spoiler: {reason}] {text}"),
            None => format!("[spoiler] {text}"),
        }
    }

    /// `<blockquote>`. Default: each line prefixed with `> ` (blank lines
    /// with `>`), as in the plain-text bodies of Matrix messages.
    fn blockquote(&self, text: &str) -> String {
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                if line.is_empty() {
                    ">".to_owned()
                } else {
                    format!("> {line}")
                }
            })
            .collect();
        lines.join("\n")
    }

    /// `<h1>` to `<h6>`, `level` being 1 to 6. Default: the text unchanged,
    /// as its own paragraph.
    fn heading(&self, level: u8, text: &str) -> String {
        let _ = level;
        text.to_owned()
    }

    /// The marker in front of a list item: `number` is `None` in a `<ul>` and
    /// the item's number in an `<ol>` (counting from its `start`). Lines after
    /// the first are indented by the marker's width. Default: `- ` or `N. `.
    fn list_marker(&self, number: Option<i64>) -> String {
        match number {
            Some(n) => format!("{n}. "),
            None => "- ".to_owned(),
        }
    }

    /// `<hr>`, on a line of its own. Default: `---`.
    fn horizontal_rule(&self) -> String {
        "---".to_owned()
    }

    /// `<img>`, with its `alt` text and `src` (an `mxc://` URI in sanitized
    /// HTML). Default: the alt text, or `[image]` if there is none.
    fn image(&self, alt: Option<&str>, src: Option<&str>) -> String {
        let _ = src;
        alt.unwrap_or("[image]").to_owned()
    }
}

/// The default [`TextMarkup`]: plain text with no markup at all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlainText;

impl TextMarkup for PlainText {}

/// Renders Matrix HTML (a `formatted_body`) as text, using `markup` for the
/// remote network's formatting.
///
/// Reply fallbacks (`<mx-reply>`), scripts and styles are left out, entities
/// are decoded and whitespace is collapsed as a browser would. Block elements
/// start new lines; paragraphs, headings, quotes and code blocks are separated
/// by one blank line, and runs of blank lines and trailing whitespace are
/// removed. Malformed HTML is repaired by the HTML5 parsing rules, so any input
/// gives some text.
pub fn html_to_text(html: &str, markup: &dyn TextMarkup) -> String {
    let fragment = Fragment::parse(html);
    let renderer = Renderer { markup };
    let mut writer = Writer::default();
    renderer.children(&fragment.root(), &mut writer, 0);
    tidy(&writer.out)
}

/// A single line break between blocks.
const LINE: u8 = 1;
/// A blank line between blocks.
const PARAGRAPH: u8 = 2;

/// What rendering a subtree produced: its text, and the separation it asked
/// for on each side. The separation is kept apart from the text so that a hook
/// wraps only the text, and so that `<b><p>x</p></b>` still starts a new line.
#[derive(Debug, Default)]
struct Rendered {
    leading_break: u8,
    leading_space: bool,
    text: String,
    trailing_break: u8,
    trailing_space: bool,
}

impl Rendered {
    /// Applies a wrapping hook, unless there is nothing to wrap.
    fn map(mut self, wrap: impl FnOnce(&str) -> String) -> Self {
        if !self.text.is_empty() {
            self.text = wrap(&self.text);
        }
        self
    }
}

/// Accumulates text, deferring spaces and line breaks until the next text
/// arrives, so that none are ever leading, trailing or doubled.
#[derive(Debug, Default)]
struct Writer {
    out: String,
    leading_break: u8,
    leading_space: bool,
    pending_break: u8,
    pending_space: bool,
}

impl Writer {
    /// Appends `text` verbatim, after any pending separation.
    fn push_raw(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        if !self.out.is_empty() {
            if self.pending_break > 0 {
                for _ in 0..self.pending_break {
                    self.out.push('\n');
                }
            } else if self.pending_space {
                self.out.push(' ');
            }
        }
        self.pending_break = 0;
        self.pending_space = false;
        self.out.push_str(text);
    }

    /// Appends HTML text, collapsing each run of whitespace into one space.
    fn push_text(&mut self, text: &str) {
        if text.starts_with(is_html_space) {
            self.request_space();
        }
        let mut wrote = false;
        for word in text.split(is_html_space).filter(|w| !w.is_empty()) {
            if wrote {
                self.request_space();
            }
            self.push_raw(word);
            wrote = true;
        }
        if wrote && text.ends_with(is_html_space) {
            self.request_space();
        }
    }

    fn request_space(&mut self) {
        if self.out.is_empty() {
            self.leading_space = true;
        } else {
            self.pending_space = true;
        }
    }

    /// Asks for at least `lines` line breaks before the next text.
    fn request_break(&mut self, lines: u8) {
        let slot = self.break_slot();
        *slot = (*slot).max(lines);
    }

    /// A `<br>`: one more line break, but never more than a blank line.
    fn line_break(&mut self) {
        let slot = self.break_slot();
        *slot = (*slot + 1).min(PARAGRAPH);
    }

    fn break_slot(&mut self) -> &mut u8 {
        if self.out.is_empty() {
            &mut self.leading_break
        } else {
            &mut self.pending_break
        }
    }

    fn push_rendered(&mut self, rendered: Rendered) {
        self.request_break(rendered.leading_break);
        if rendered.leading_space {
            self.request_space();
        }
        self.push_raw(&rendered.text);
        self.request_break(rendered.trailing_break);
        if rendered.trailing_space {
            self.request_space();
        }
    }

    /// Appends `text` as a block of its own, `lines` away from its neighbours.
    fn push_block(&mut self, text: &str, lines: u8) {
        self.request_break(lines);
        self.push_raw(text);
        self.request_break(lines);
    }

    fn finish(self) -> Rendered {
        Rendered {
            leading_break: self.leading_break,
            leading_space: self.leading_space,
            text: self.out,
            trailing_break: self.pending_break,
            trailing_space: self.pending_space,
        }
    }
}

/// The whitespace that HTML collapses (not the no-break space).
fn is_html_space(c: char) -> bool {
    c.is_ascii_whitespace()
}

/// Walks the tree, calling the markup hooks.
struct Renderer<'m> {
    markup: &'m dyn TextMarkup,
}

impl Renderer<'_> {
    fn children(&self, node: &Handle, writer: &mut Writer, depth: usize) {
        if depth >= MAX_DEPTH {
            // Past the limit the structure is dropped but no text is lost.
            writer.push_text(&text_content(node));
            return;
        }
        for child in node.children.borrow().iter() {
            self.node(child, writer, depth + 1);
        }
    }

    /// Renders the children of `node` on their own, for a hook to wrap.
    fn render(&self, node: &Handle, depth: usize) -> Rendered {
        let mut writer = Writer::default();
        self.children(node, &mut writer, depth);
        writer.finish()
    }

    fn node(&self, node: &Handle, writer: &mut Writer, depth: usize) {
        match &node.data {
            NodeData::Text { contents } => writer.push_text(&contents.borrow()),
            NodeData::Element { .. } => self.element(node, writer, depth),
            _ => {}
        }
    }

    fn element(&self, node: &Handle, writer: &mut Writer, depth: usize) {
        let Some(name) = element_name(node) else {
            return;
        };
        if is_hidden(node) {
            return;
        }
        let markup = self.markup;
        match name {
            "b" | "strong" => self.inline(node, writer, depth, |m, t| m.bold(t)),
            "i" | "em" => self.inline(node, writer, depth, |m, t| m.italic(t)),
            "u" | "ins" => self.inline(node, writer, depth, |m, t| m.underline(t)),
            "s" | "del" | "strike" => self.inline(node, writer, depth, |m, t| m.strikethrough(t)),
            "code" => self.inline(node, writer, depth, |m, t| m.inline_code(t)),
            "a" => self.link(node, writer, depth),
            "span" | "font" => self.span(node, writer, depth),
            "img" => {
                let alt = attr(node, "alt").filter(|a| !a.is_empty());
                let src = attr(node, "src");
                writer.push_raw(&markup.image(alt.as_deref(), src.as_deref()));
            }
            "br" => writer.line_break(),
            "hr" => writer.push_block(&markup.horizontal_rule(), LINE),
            "p" => {
                writer.request_break(PARAGRAPH);
                self.children(node, writer, depth);
                writer.request_break(PARAGRAPH);
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                let level = name.as_bytes()[1] - b'0';
                let text = self.render(node, depth).text;
                if !text.is_empty() {
                    writer.push_block(&markup.heading(level, &text), PARAGRAPH);
                }
            }
            "blockquote" => {
                let text = self.render(node, depth).text;
                if !text.is_empty() {
                    writer.push_block(&markup.blockquote(&text), PARAGRAPH);
                }
            }
            "pre" => self.code_block(node, writer),
            "ul" => self.list(node, writer, depth, None),
            "ol" => {
                let start = attr(node, "start").and_then(|s| s.trim().parse().ok());
                self.list(node, writer, depth, Some(start.unwrap_or(1)));
            }
            "tr" => self.table_row(node, writer, depth),
            "div" | "li" | "table" | "caption" | "details" | "summary" | "dl" | "dt" | "dd"
            | "section" | "article" | "header" | "footer" | "nav" | "aside" | "figure"
            | "figcaption" | "address" | "main" => {
                writer.request_break(LINE);
                self.children(node, writer, depth);
                writer.request_break(LINE);
            }
            _ => self.children(node, writer, depth),
        }
    }

    /// Renders an inline element whose only markup is one wrapping hook.
    fn inline(
        &self,
        node: &Handle,
        writer: &mut Writer,
        depth: usize,
        hook: fn(&dyn TextMarkup, &str) -> String,
    ) {
        let rendered = self.render(node, depth);
        writer.push_rendered(rendered.map(|text| hook(self.markup, text)));
    }

    fn link(&self, node: &Handle, writer: &mut Writer, depth: usize) {
        let mut rendered = self.render(node, depth);
        let Some(href) = attr(node, "href") else {
            writer.push_rendered(rendered);
            return;
        };
        let href = href.trim();
        let markup = self.markup;
        // Called even for empty text, so that a bare link still shows where it goes.
        rendered.text = match parse_matrix_link(href) {
            Some(MatrixId::User(user)) => markup.user_mention(&user, &rendered.text),
            Some(MatrixId::Room(room)) => {
                markup.room_mention(<&RoomOrAliasId>::from(&*room), &rendered.text)
            }
            Some(MatrixId::RoomAlias(alias)) => {
                markup.room_mention(<&RoomOrAliasId>::from(&*alias), &rendered.text)
            }
            _ if href.is_empty() => rendered.text,
            _ => markup.link(&rendered.text, href),
        };
        writer.push_rendered(rendered);
    }

    fn span(&self, node: &Handle, writer: &mut Writer, depth: usize) {
        let non_empty = |name: &str| attr(node, name).filter(|v| !v.is_empty());
        let foreground = non_empty("data-mx-color").or_else(|| non_empty("color"));
        let background = non_empty("data-mx-bg-color");
        let mut rendered = self.render(node, depth);
        if foreground.is_some() || background.is_some() {
            rendered = rendered.map(|t| {
                self.markup
                    .color(t, foreground.as_deref(), background.as_deref())
            });
        }
        if let Some(reason) = attr(node, "data-mx-spoiler") {
            let reason = Some(reason.trim()).filter(|r| !r.is_empty());
            rendered = rendered.map(|t| self.markup.spoiler(t, reason));
        }
        writer.push_rendered(rendered);
    }

    fn code_block(&self, node: &Handle, writer: &mut Writer) {
        let language = node
            .children
            .borrow()
            .iter()
            .find(|child| element_name(child) == Some("code"))
            .and_then(|code| attr(code, "class"))
            .and_then(|class| {
                class
                    .split_ascii_whitespace()
                    .find_map(|c| c.strip_prefix("language-"))
                    .map(str::to_owned)
            })
            .filter(|lang| !lang.is_empty());
        let code = text_content(node);
        // Markdown renderers end every code block with a newline.
        let code = code.strip_suffix('\n').unwrap_or(&code);
        if !code.trim().is_empty() {
            let text = self.markup.code_block(code, language.as_deref());
            writer.push_block(&text, PARAGRAPH);
        }
    }

    /// Renders a `<ul>` (`number` is `None`) or an `<ol>` counting from `number`.
    fn list(&self, node: &Handle, writer: &mut Writer, depth: usize, mut number: Option<i64>) {
        let mut items = Vec::new();
        for child in node.children.borrow().iter() {
            if element_name(child) == Some("li") {
                let marker = self.markup.list_marker(number);
                number = number.map(|n| n.saturating_add(1));
                let text = self.render(child, depth + 1).text;
                items.push(indent_item(&marker, &text));
            } else {
                // Stray text or elements between items: keep their text unmarked.
                let mut stray = Writer::default();
                self.node(child, &mut stray, depth + 1);
                let text = stray.finish().text;
                if !text.is_empty() {
                    items.push(text);
                }
            }
        }
        writer.push_block(&items.join("\n"), LINE);
    }

    fn table_row(&self, node: &Handle, writer: &mut Writer, depth: usize) {
        let cells: Vec<String> = node
            .children
            .borrow()
            .iter()
            .filter(|child| matches!(element_name(child), Some("td" | "th")))
            .map(|cell| self.render(cell, depth + 1).text)
            .collect();
        writer.push_block(&cells.join(" | "), LINE);
    }
}

/// Puts `marker` before the first line of `text` and aligns the other lines
/// under the first one, so nested lists indent naturally.
fn indent_item(marker: &str, text: &str) -> String {
    if text.is_empty() {
        return marker.trim_end().to_owned();
    }
    let indent = " ".repeat(marker.chars().count());
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 {
            out.push_str(marker);
        } else {
            out.push('\n');
            if !line.is_empty() {
                out.push_str(&indent);
            }
        }
        out.push_str(line);
    }
    out
}

/// Removes trailing whitespace from every line and from the whole text.
fn tidy(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    lines
        .join("\n")
        .trim_start_matches('\n')
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(html: &str) -> String {
        html_to_text(html, &PlainText)
    }

    /// Markup in the style of IRC, to show that the hooks are used.
    struct Irc;

    impl TextMarkup for Irc {
        fn bold(&self, text: &str) -> String {
            format!("\x02{text}\x02")
        }
        fn italic(&self, text: &str) -> String {
            format!("\x1d{text}\x1d")
        }
        fn color(&self, text: &str, foreground: Option<&str>, _: Option<&str>) -> String {
            format!("\x03[{}]{text}\x03", foreground.unwrap_or(""))
        }
        fn code_block(&self, code: &str, language: Option<&str>) -> String {
            format!("```{}\n{code}\n```", language.unwrap_or(""))
        }
        fn list_marker(&self, number: Option<i64>) -> String {
            number.map_or("* ".to_owned(), |n| format!("{n}) "))
        }
        fn user_mention(&self, user: &UserId, _: &str) -> String {
            user.localpart().to_owned()
        }
    }

    #[test]
    fn plain_text_passes_through() {
        assert_eq!(plain("hello world"), "hello world");
        assert_eq!(plain(""), "");
    }

    #[test]
    fn inline_formatting_is_plain_by_default() {
        let html = "<b>b</b> <strong>s</strong> <i>i</i> <em>e</em> <u>u</u> <s>s</s> <del>d</del> <code>c</code> x<sup>2</sup>";
        assert_eq!(plain(html), "b s i e u s d c x2");
    }

    #[test]
    fn hooks_wrap_rendered_text() {
        assert_eq!(html_to_text("a <b>bold</b> b", &Irc), "a \x02bold\x02 b");
        assert_eq!(
            html_to_text("<b>x <i>y</i></b>", &Irc),
            "\x02x \x1dy\x1d\x02"
        );
        assert_eq!(
            html_to_text(r##"<font data-mx-color="#ff0000">red</font>"##, &Irc),
            "\x03[#ff0000]red\x03"
        );
    }

    #[test]
    fn hooks_are_not_called_for_empty_text() {
        assert_eq!(html_to_text("a<b></b>b", &Irc), "ab");
        assert_eq!(html_to_text("a <b> </b> b", &Irc), "a b");
    }

    #[test]
    fn whitespace_inside_formatting_stays_outside_the_hook() {
        assert_eq!(html_to_text("a<b> b </b>c", &Irc), "a \x02b\x02 c");
    }

    #[test]
    fn entities_are_decoded() {
        assert_eq!(
            plain("a &amp; b &lt;c&gt; &quot;d&quot; &#39;e&#39; &eacute;"),
            "a & b <c> \"d\" 'e' é"
        );
    }

    #[test]
    fn whitespace_collapses() {
        assert_eq!(plain("  a \n\t b  "), "a b");
        assert_eq!(plain("<p>\n  a\n</p>\n\n<p>b</p>\n"), "a\n\nb");
    }

    #[test]
    fn links() {
        assert_eq!(
            plain(r#"<a href="https://example.org">site</a>"#),
            "site (https://example.org)"
        );
        assert_eq!(
            plain(r#"<a href="https://example.org">https://example.org</a>"#),
            "https://example.org"
        );
        assert_eq!(
            plain(r#"<a href="mailto:a@example.org">a@example.org</a>"#),
            "a@example.org"
        );
        assert_eq!(
            plain(r#"<a href="https://example.org"></a>"#),
            "https://example.org"
        );
        assert_eq!(plain(r#"<a name="anchor">text</a>"#), "text");
        assert_eq!(
            plain(r#"see <a href="https://example.org"><b>this</b></a>."#),
            "see this (https://example.org)."
        );
    }

    #[test]
    fn user_mentions() {
        let html = r#"hi <a href="https://matrix.to/#/@alice:example.org">Alice</a>!"#;
        assert_eq!(plain(html), "hi Alice!");
        assert_eq!(html_to_text(html, &Irc), "hi alice!");
        let empty = r#"<a href="matrix:u/alice:example.org"></a>"#;
        assert_eq!(plain(empty), "@alice:example.org");
    }

    #[test]
    fn room_links() {
        let alias = r#"<a href="https://matrix.to/#/%23room:example.org">#room:example.org</a>"#;
        assert_eq!(plain(alias), "#room:example.org");
        let named = r#"<a href="https://matrix.to/#/#room:example.org">the room</a>"#;
        assert_eq!(plain(named), "the room (#room:example.org)");
        let id = r#"<a href="https://matrix.to/#/!abc:example.org?via=example.org">Room</a>"#;
        assert_eq!(plain(id), "Room");
        let event = r#"<a href="https://matrix.to/#/!abc:example.org/$ev">msg</a>"#;
        assert_eq!(
            plain(event),
            "msg (https://matrix.to/#/!abc:example.org/$ev)"
        );
    }

    #[test]
    fn colours_keep_inner_text() {
        let html = r##"<span data-mx-color="#ff0000" data-mx-bg-color="#000000">red</span> <font color="#00ff00">green</font>"##;
        assert_eq!(plain(html), "red green");
    }

    #[test]
    fn spoilers() {
        assert_eq!(
            plain("a <span data-mx-spoiler>secret</span>"),
            "a [spoiler] secret"
        );
        assert_eq!(
            plain(r#"<span data-mx-spoiler="plot">twist</span>"#),
            "[spoiler: plot] twist"
        );
    }

    #[test]
    fn blockquotes() {
        assert_eq!(
            plain("<blockquote>quoted</blockquote>reply"),
            "> quoted\n\nreply"
        );
        assert_eq!(
            plain("<blockquote><p>a</p><p>b</p></blockquote>"),
            "> a\n>\n> b"
        );
        assert_eq!(
            plain("<blockquote>a<blockquote>b</blockquote></blockquote>"),
            "> a\n>\n> > b"
        );
    }

    #[test]
    fn unordered_list() {
        assert_eq!(
            plain("<ul>\n<li>one</li>\n<li>two</li>\n</ul>"),
            "- one\n- two"
        );
    }

    #[test]
    fn ordered_list_honours_start() {
        assert_eq!(plain("<ol><li>a</li><li>b</li></ol>"), "1. a\n2. b");
        assert_eq!(
            plain(r#"<ol start="9"><li>a</li><li>b</li></ol>"#),
            "9. a\n10. b"
        );
        assert_eq!(plain(r#"<ol start="nope"><li>a</li></ol>"#), "1. a");
    }

    #[test]
    fn nested_lists() {
        let html =
            "<ul><li>a<ul><li>b<ol start=\"3\"><li>c</li></ol></li></ul></li><li>d</li></ul>";
        assert_eq!(plain(html), "- a\n  - b\n    3. c\n- d");
        assert_eq!(html_to_text(html, &Irc), "* a\n  * b\n    3) c\n* d");
    }

    #[test]
    fn list_items_with_paragraphs() {
        let html = "<ol><li><p>first</p><p>more</p></li><li><p>second</p></li></ol>";
        assert_eq!(plain(html), "1. first\n\n   more\n2. second");
    }

    #[test]
    fn list_after_text() {
        assert_eq!(
            plain("<p>items:</p><ul><li>x</li></ul>after"),
            "items:\n\n- x\nafter"
        );
    }

    #[test]
    fn headings() {
        assert_eq!(plain("<h1>Title</h1><p>body</p>"), "Title\n\nbody");
        struct Hashes;
        impl TextMarkup for Hashes {
            fn heading(&self, level: u8, text: &str) -> String {
                format!("{} {text}", "#".repeat(level.into()))
            }
        }
        assert_eq!(html_to_text("<h3>Sub</h3>", &Hashes), "### Sub");
    }

    #[test]
    fn horizontal_rule() {
        assert_eq!(plain("a<hr>b"), "a\n---\nb");
    }

    #[test]
    fn line_breaks() {
        assert_eq!(plain("a<br>b"), "a\nb");
        assert_eq!(plain("a<br><br>b"), "a\n\nb");
        assert_eq!(plain("a<br><br><br><br>b"), "a\n\nb");
        assert_eq!(plain("<div>a</div><div>b</div>"), "a\nb");
        assert_eq!(plain("<p>a</p><p>b</p>"), "a\n\nb");
        assert_eq!(plain("<p>a<br></p><p>b</p>"), "a\n\nb");
        assert_eq!(plain("<br>a<br>"), "a");
        assert_eq!(plain("<p></p><p></p>a<p></p>"), "a");
    }

    #[test]
    fn blocks_inside_inline_elements_still_break() {
        assert_eq!(
            html_to_text("x<b><p>y</p></b>z", &Irc),
            "x\n\n\x02y\x02\n\nz"
        );
    }

    #[test]
    fn code_blocks() {
        let html = "<pre><code class=\"language-rust\">fn main() {\n    let x = 1;\n}\n</code></pre><p>after</p>";
        assert_eq!(plain(html), "fn main() {\n    let x = 1;\n}\n\nafter");
        assert_eq!(
            html_to_text(html, &Irc),
            "```rust\nfn main() {\n    let x = 1;\n}\n```\n\nafter"
        );
        assert_eq!(html_to_text("<pre>a  b</pre>", &Irc), "```\na  b\n```");
    }

    #[test]
    fn images() {
        assert_eq!(plain(r#"<img src="mxc://example.org/a" alt="cat">"#), "cat");
        assert_eq!(
            plain(r#"look <img src="mxc://example.org/a"> here"#),
            "look [image] here"
        );
    }

    #[test]
    fn tables() {
        let html = "<table><thead><tr><th>a</th><th>b</th></tr></thead><tbody><tr><td>1</td><td>2</td></tr></tbody></table>";
        assert_eq!(plain(html), "a | b\n1 | 2");
    }

    #[test]
    fn details_and_summary() {
        assert_eq!(
            plain("<details><summary>More</summary>hidden</details>"),
            "More\nhidden"
        );
    }

    #[test]
    fn reply_fallback_and_scripts_are_skipped() {
        let html = "<mx-reply><blockquote>old <b>message</b></blockquote></mx-reply>new<script>x()</script><style>p{}</style>";
        assert_eq!(plain(html), "new");
    }

    #[test]
    fn malformed_html() {
        assert_eq!(plain("<b><i>x</b></i>"), "x");
        assert_eq!(html_to_text("<b><i>x</b></i>", &Irc), "\x02\x1dx\x1d\x02");
        assert_eq!(plain("<b>unclosed <i>tags"), "unclosed tags");
        assert_eq!(plain("<p>a<p>b"), "a\n\nb");
        assert_eq!(plain("a < b && c > d"), "a < b && c > d");
        // The tag ends at the first `>`, so the second one is text.
        assert_eq!(plain("<a href=\"x\" <b>>y</a></div></span>"), ">y (x)");
        assert_eq!(plain("<ul>stray<li>a</li></ul>"), "stray\n- a");
        assert_eq!(plain("</p></li>text<!-- comment -->"), "text");
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        // Far past MAX_DEPTH; kept small because HTML5 tree building is
        // quadratic in nesting depth.
        let html = "<blockquote><b>".repeat(1_000) + "x";
        let text = plain(&html);
        assert!(text.ends_with('x'), "{text}");
    }

    #[test]
    fn trailing_whitespace_is_trimmed() {
        assert_eq!(plain("<pre>a   \nb  \n\n</pre>"), "a\nb");
    }
}
