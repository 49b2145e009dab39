//! Message payloads xmpp-parsers does not have, written with its derive macros (xso):
//! message retraction (XEP-0424), replies (XEP-0461) and fallback indication
//! (XEP-0428).

use xso::{AsXml, FromXml};

/// The retraction namespace (XEP-0424, version 1).
pub const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
/// The reply namespace (XEP-0461).
pub const NS_REPLY: &str = "urn:xmpp:reply:0";
/// The fallback namespace (XEP-0428).
pub const NS_FALLBACK: &str = "urn:xmpp:fallback:0";

/// `<retract id='…'/>`: the sender takes back the message `id`.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS_RETRACT, name = "retract")]
pub struct Retract {
    /// The message taken back (in a group chat, the id the room gave it).
    #[xml(attribute)]
    pub id: String,
}

/// `<reply to='…' id='…'/>`: the message replies to message `id` of `to`.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS_REPLY, name = "reply")]
pub struct Reply {
    /// Who wrote the message replied to (in a group chat, their occupant address).
    #[xml(attribute(default))]
    pub to: Option<String>,
    /// The message replied to.
    #[xml(attribute)]
    pub id: String,
}

/// `<fallback for='…'><body start='…' end='…'/></fallback>`: which part of the body is
/// only there for clients that do not know the `for` extension.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS_FALLBACK, name = "fallback")]
pub struct Fallback {
    /// The extension the fallback stands in for.
    #[xml(attribute(name = "for"))]
    pub for_: String,
    /// The ranges of the body that are fallback; none means the whole body.
    #[xml(child(n = ..))]
    pub bodies: Vec<FallbackBody>,
}

/// A range of the body, in Unicode code points.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS_FALLBACK, name = "body")]
pub struct FallbackBody {
    /// The first code point.
    #[xml(attribute(default))]
    pub start: Option<usize>,
    /// One past the last code point.
    #[xml(attribute(default))]
    pub end: Option<usize>,
}

/// `body` without the fallback ranges `fallback` marks (ranges that do not fit the body
/// are ignored).
pub fn strip_fallback(body: &str, fallback: &Fallback) -> String {
    if fallback.bodies.is_empty() {
        return String::new();
    }
    let chars: Vec<char> = body.chars().collect();
    let mut keep = vec![true; chars.len()];
    for range in &fallback.bodies {
        let start = range.start.unwrap_or(0);
        let end = range.end.unwrap_or(chars.len());
        if start <= end && end <= chars.len() {
            keep[start..end].iter_mut().for_each(|k| *k = false);
        }
    }
    chars
        .iter()
        .zip(keep)
        .filter_map(|(c, keep)| keep.then_some(*c))
        .collect()
}

#[cfg(test)]
mod tests {
    use tokio_xmpp::minidom::Element;

    use super::*;

    fn parse<T: TryFrom<Element>>(xml: &str) -> Option<T> {
        T::try_from(xml.parse::<Element>().ok()?).ok()
    }

    #[test]
    fn payloads_parse_and_round_trip() {
        let reply: Reply =
            parse("<reply xmlns='urn:xmpp:reply:0' to='r@muc/nick' id='abc'/>").unwrap();
        assert_eq!(reply.id, "abc");
        assert_eq!(reply.to.as_deref(), Some("r@muc/nick"));
        assert_eq!(
            Reply::try_from(Element::from(reply.clone())).unwrap(),
            reply
        );
        let retract: Retract =
            parse("<retract xmlns='urn:xmpp:message-retract:1' id='x'/>").unwrap();
        assert_eq!(retract.id, "x");
        assert!(parse::<Retract>("<retract xmlns='urn:xmpp:message-retract:1'/>").is_none());
    }

    #[test]
    fn fallback_ranges_are_cut_by_code_point() {
        let fallback: Fallback = parse(
            "<fallback xmlns='urn:xmpp:fallback:0' for='urn:xmpp:reply:0'><body start='0' end='8'/></fallback>",
        )
        .unwrap();
        assert_eq!(strip_fallback("> héllo\nanswer", &fallback), "answer");
        let bad = Fallback {
            for_: NS_REPLY.into(),
            bodies: vec![FallbackBody {
                start: Some(5),
                end: Some(99),
            }],
        };
        assert_eq!(strip_fallback("short", &bad), "short");
    }
}
