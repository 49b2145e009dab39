//! Message payloads xmpp-parsers does not have, written with its derive macros (xso):
//! message retraction (XEP-0424), moderation (XEP-0425, its current version and the
//! fastening-based version 0 that Prosody's mod_muc_moderation speaks), replies
//! (XEP-0461) and fallback indication (XEP-0428).

use tokio_xmpp::minidom::Element;
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

/// The moderation namespace (XEP-0425, version 1).
pub const NS_MODERATE: &str = "urn:xmpp:message-moderate:1";
/// The moderation namespace of XEP-0425 version 0, with fastening (XEP-0422).
pub const NS_MODERATE_0: &str = "urn:xmpp:message-moderate:0";
/// The retraction namespace of XEP-0424 version 0, used by moderation version 0.
pub const NS_RETRACT_0: &str = "urn:xmpp:message-retract:0";
/// The fastening namespace (XEP-0422), used by moderation version 0.
pub const NS_FASTEN: &str = "urn:xmpp:fasten:0";

/// `<retract/>` in a moderation request: what the moderator asks for.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS_RETRACT, name = "retract")]
pub struct RetractAsked;

/// A moderator asks the room to retract message `id` (XEP-0425, to the room in an IQ set).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS_MODERATE, name = "moderate")]
pub struct Moderate {
    /// The room's id of the message.
    #[xml(attribute)]
    pub id: String,
    /// What is asked.
    #[xml(child)]
    pub retract: RetractAsked,
    /// Why, if said.
    #[xml(extract(default, fields(text(type_ = String))))]
    pub reason: Option<String>,
}

/// The room's announcement that a moderator retracted message `id` (XEP-0425).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS_RETRACT, name = "retract")]
pub struct ModeratedRetract {
    /// The room's id of the message.
    #[xml(attribute)]
    pub id: String,
    /// Who moderated it.
    #[xml(child)]
    pub moderated: Moderated,
    /// Why, if said.
    #[xml(extract(default, fields(text(type_ = String))))]
    pub reason: Option<String>,
}

/// `<moderated by='…'/>`: the moderator (their occupant address), and what the room adds.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS_MODERATE, name = "moderated")]
pub struct Moderated {
    /// The moderator's occupant address.
    #[xml(attribute(default))]
    pub by: Option<String>,
    /// The rest (the moderator's occupant id).
    #[xml(element(n = ..))]
    pub rest: Vec<Element>,
}

/// `<retract/>` of version 0.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS_RETRACT_0, name = "retract")]
pub struct RetractAsked0;

/// Version 0 of [`Moderate`]: `<apply-to id='…'><moderate><retract/></moderate></apply-to>`.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS_FASTEN, name = "apply-to")]
pub struct ApplyToModerate {
    /// The room's id of the message.
    #[xml(attribute)]
    pub id: String,
    /// The request.
    #[xml(child)]
    pub moderate: Moderate0,
}

/// The request inside [`ApplyToModerate`].
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS_MODERATE_0, name = "moderate")]
pub struct Moderate0 {
    /// What is asked.
    #[xml(child)]
    pub retract: RetractAsked0,
    /// Why, if said.
    #[xml(extract(default, fields(text(type_ = String))))]
    pub reason: Option<String>,
}

/// Version 0 of [`ModeratedRetract`]:
/// `<apply-to id='…'><moderated by='…'><retract/><reason/></moderated></apply-to>`.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS_FASTEN, name = "apply-to")]
pub struct ApplyToModerated {
    /// The room's id of the message.
    #[xml(attribute)]
    pub id: String,
    /// The announcement.
    #[xml(child)]
    pub moderated: Moderated0,
}

/// The announcement inside [`ApplyToModerated`].
#[derive(FromXml, AsXml, Debug, Clone, PartialEq, Eq)]
#[xml(namespace = NS_MODERATE_0, name = "moderated")]
pub struct Moderated0 {
    /// The moderator's occupant address.
    #[xml(attribute(default))]
    pub by: Option<String>,
    /// Present when the message is retracted (not only edited by the moderator).
    #[xml(child(default))]
    pub retract: Option<RetractAsked0>,
    /// Why, if said.
    #[xml(extract(default, fields(text(type_ = String))))]
    pub reason: Option<String>,
}

/// A moderator's retraction the room announces, in either version: the room's id of the
/// message, the moderator's occupant address and the reason.
pub fn moderation_of(payloads: &[Element]) -> Option<(String, Option<String>, Option<String>)> {
    payloads.iter().find_map(|payload| {
        if let Ok(v1) = ModeratedRetract::try_from(payload.clone()) {
            return Some((v1.id, v1.moderated.by, v1.reason));
        }
        let v0 = ApplyToModerated::try_from(payload.clone()).ok()?;
        v0.moderated.retract?;
        Some((v0.id, v0.moderated.by, v0.moderated.reason))
    })
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
    fn moderation_announcements_of_both_versions_are_read() {
        let el = |xml: &str| xml.parse::<Element>().unwrap();
        // XEP-0425 version 1 (the example of the XEP).
        let v1 = el(
            "<retract id='stanza-id-1' xmlns='urn:xmpp:message-retract:1'>\
            <moderated by='room@muc/mod' xmlns='urn:xmpp:message-moderate:1'>\
            <occupant-id xmlns='urn:xmpp:occupant-id:0' id='x'/></moderated>\
            <reason>spam</reason></retract>",
        );
        assert_eq!(
            moderation_of(&[v1]),
            Some((
                "stanza-id-1".to_owned(),
                Some("room@muc/mod".to_owned()),
                Some("spam".to_owned())
            ))
        );
        // Version 0, as Prosody's mod_muc_moderation announces it.
        let v0 = el("<apply-to id='stanza-id-0' xmlns='urn:xmpp:fasten:0'>\
            <moderated by='room@muc/mod' xmlns='urn:xmpp:message-moderate:0'>\
            <retract xmlns='urn:xmpp:message-retract:0'/><reason>rude</reason>\
            </moderated></apply-to>");
        assert_eq!(
            moderation_of(&[v0]),
            Some((
                "stanza-id-0".to_owned(),
                Some("room@muc/mod".to_owned()),
                Some("rude".to_owned())
            ))
        );
        // A user's own retraction is no moderation.
        let own = el("<retract id='x' xmlns='urn:xmpp:message-retract:1'/>");
        assert_eq!(moderation_of(&[own]), None);
        // The requests.
        let asked = Element::from(Moderate {
            id: "s1".to_owned(),
            retract: RetractAsked,
            reason: Some("spam".to_owned()),
        });
        assert_eq!(
            String::from(&asked),
            "<moderate xmlns='urn:xmpp:message-moderate:1' id='s1'>\
             <retract xmlns='urn:xmpp:message-retract:1'/><reason>spam</reason></moderate>"
        );
        let asked0 = Element::from(ApplyToModerate {
            id: "s0".to_owned(),
            moderate: Moderate0 {
                retract: RetractAsked0,
                reason: None,
            },
        });
        assert_eq!(
            String::from(&asked0),
            "<apply-to xmlns='urn:xmpp:fasten:0' id='s0'>\
             <moderate xmlns='urn:xmpp:message-moderate:0'>\
             <retract xmlns='urn:xmpp:message-retract:0'/></moderate></apply-to>"
        );
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
