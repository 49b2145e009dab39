//! User mentions: building pills and finding the users a message mentions.
//!
//! A pill is a link to the user's `https://matrix.to/#/@user:server` URI;
//! `matrix:u/user:server` URIs are read as well, since the spec allows both.

use ruma::matrix_uri::MatrixId;
use ruma::{MatrixToUri, MatrixUri, OwnedUserId, UserId};

use super::dom::{Fragment, attr, element_name, for_each_element};
use super::to_html::escape_html;

/// Builds an HTML mention pill for `user`, showing `display_name`.
///
/// The user id is percent-encoded inside the `matrix.to` URI and the whole
/// link is HTML-escaped. An empty display name falls back to the user id, so
/// the pill never renders as an empty link.
pub fn mention_pill(user: &UserId, display_name: &str) -> String {
    let text = if display_name.is_empty() {
        user.as_str()
    } else {
        display_name
    };
    format!(
        r#"<a href="{}">{}</a>"#,
        escape_html(&user.matrix_to_uri().to_string()),
        escape_html(text)
    )
}

/// The users that `html` links to, in order of first appearance, without
/// duplicates.
///
/// Links inside a reply fallback are ignored: quoting a message does not
/// mention its sender again. Links whose user id is invalid are skipped.
pub fn mentioned_users(html: &str) -> Vec<OwnedUserId> {
    let fragment = Fragment::parse(html);
    let mut users: Vec<OwnedUserId> = Vec::new();
    for_each_element(&fragment.root(), |node| {
        if element_name(node) != Some("a") {
            return;
        }
        let Some(href) = attr(node, "href") else {
            return;
        };
        if let Some(MatrixId::User(user)) = parse_matrix_link(&href)
            && !users.contains(&user)
        {
            users.push(user);
        }
    });
    users
}

/// Reads a `matrix.to` or `matrix:` URI, percent-decoding the identifier.
pub(crate) fn parse_matrix_link(href: &str) -> Option<MatrixId> {
    let href = href.trim();
    if let Ok(uri) = MatrixToUri::parse(href) {
        return Some(uri.id().clone());
    }
    MatrixUri::parse(href).ok().map(|uri| uri.id().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruma::user_id;

    #[test]
    fn pill_links_to_matrix_to() {
        let pill = mention_pill(user_id!("@alice:example.org"), "Alice");
        assert_eq!(
            pill,
            r#"<a href="https://matrix.to/#/@alice:example.org">Alice</a>"#
        );
    }

    #[test]
    fn pill_escapes_display_name() {
        let pill = mention_pill(user_id!("@alice:example.org"), "<b>A&B</b>");
        assert!(pill.ends_with(">&lt;b&gt;A&amp;B&lt;/b&gt;</a>"), "{pill}");
    }

    #[test]
    fn pill_with_empty_name_shows_the_id() {
        let pill = mention_pill(user_id!("@alice:example.org"), "");
        assert!(pill.ends_with(">@alice:example.org</a>"), "{pill}");
    }

    #[test]
    fn pill_round_trips() {
        let user = user_id!("@alice:example.org");
        assert_eq!(
            mentioned_users(&mention_pill(user, "Alice")),
            vec![user.to_owned()]
        );
    }

    #[test]
    fn pill_percent_encodes_and_round_trips() {
        let user = UserId::parse("@a/b:example.org").expect("valid user id");
        let pill = mention_pill(&user, "ab");
        assert!(
            pill.contains("https://matrix.to/#/@a%2Fb:example.org"),
            "{pill}"
        );
        assert_eq!(mentioned_users(&pill), vec![user]);

        // Historical user ids may hold `?` and `#`, which would otherwise
        // end the URI's path.
        let user = UserId::parse("@a?b#c:example.org").expect("valid historical user id");
        let pill = mention_pill(&user, "abc");
        assert!(pill.contains("@a%3Fb%23c:example.org"), "{pill}");
        assert_eq!(mentioned_users(&pill), vec![user]);
    }

    #[test]
    fn finds_users_in_order_without_duplicates() {
        let html = concat!(
            r#"<a href="https://matrix.to/#/@bob:example.org">Bob</a> "#,
            r#"<a href="matrix:u/carol:example.org?action=chat">Carol</a> "#,
            r#"<a href="https://matrix.to/#/%40bob%3Aexample.org">Bob again</a>"#,
        );
        let users: Vec<String> = mentioned_users(html)
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(users, ["@bob:example.org", "@carol:example.org"]);
    }

    #[test]
    fn ignores_other_links_and_invalid_ids() {
        let html = concat!(
            r#"<a href="https://matrix.to/#/#room:example.org">room</a>"#,
            r#"<a href="https://matrix.to/#/!room:example.org/$event">event</a>"#,
            r#"<a href="https://example.org/@bob:example.org">web</a>"#,
            r#"<a href="https://matrix.to/#/@no-server">bad</a>"#,
            r#"<a>no href</a>"#,
        );
        assert!(mentioned_users(html).is_empty());
    }

    #[test]
    fn ignores_mentions_in_reply_fallback() {
        let html = concat!(
            r#"<mx-reply><blockquote><a href="https://matrix.to/#/@bob:example.org">Bob</a>"#,
            r#"</blockquote></mx-reply><a href="https://matrix.to/#/@carol:example.org">C</a>"#,
        );
        let users: Vec<String> = mentioned_users(html)
            .iter()
            .map(|u| u.to_string())
            .collect();
        assert_eq!(users, ["@carol:example.org"]);
    }
}
