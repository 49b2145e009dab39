//! What the component and its users say they are: service discovery (XEP-0030) answers,
//! and the entity capabilities (XEP-0115) puppets carry in their presence, so that
//! clients learn what a Matrix user's puppet understands without asking each one.

use std::sync::OnceLock;

use tokio_xmpp::parsers::caps::{Caps, compute_disco, hash_caps};
use tokio_xmpp::parsers::disco::{DiscoInfoResult, Identity};
use tokio_xmpp::parsers::hashes::{Algo, Hash};
use tokio_xmpp::parsers::ns;

use crate::payloads::{NS_FALLBACK, NS_REPLY, NS_RETRACT};

/// The node of the puppets' capabilities: this software.
pub const CAPS_NODE: &str = "urn:trestle:bridge-xmpp";

/// The component itself: a gateway to Matrix.
pub fn component_info() -> DiscoInfoResult {
    DiscoInfoResult {
        node: None,
        identities: vec![Identity::new("gateway", "matrix", "en", "Matrix (Trestle)")],
        features: features(&[ns::DISCO_INFO, ns::PING, ns::VERSION]),
        extensions: Vec::new(),
    }
}

/// A Matrix user's puppet (or the bot): a client that speaks what the bridge carries.
/// `node` is echoed, as a capabilities query asks.
pub fn puppet_info(node: Option<String>) -> DiscoInfoResult {
    DiscoInfoResult {
        node,
        identities: vec![Identity::new(
            "client",
            "bot",
            "en",
            "Matrix user (Trestle)",
        )],
        features: features(&[
            ns::CAPS,
            ns::CHATSTATES,
            ns::DISCO_INFO,
            ns::DISPLAYED_MARKERS,
            ns::MESSAGE_CORRECT,
            ns::MUC,
            ns::OOB,
            ns::PING,
            ns::REACTIONS,
            ns::VERSION,
            NS_FALLBACK,
            NS_REPLY,
            NS_RETRACT,
        ]),
        extensions: Vec::new(),
    }
}

/// The capabilities element of the puppets' presence (computed once).
pub fn puppet_caps() -> Caps {
    static CAPS: OnceLock<Caps> = OnceLock::new();
    CAPS.get_or_init(|| {
        let hash = hash_caps(&compute_disco(&puppet_info(None)), Algo::Sha_1)
            .expect("SHA-1 is a hash xmpp-parsers computes");
        Caps::new(CAPS_NODE, hash)
    })
    .clone()
}

/// Whether `node` is the puppets' capabilities node (`<CAPS_NODE>#<ver>`).
pub fn is_puppet_node(node: &str) -> bool {
    node.strip_prefix(CAPS_NODE)
        .and_then(|rest| rest.strip_prefix('#'))
        .is_some_and(|ver| ver == puppet_caps_ver())
}

fn puppet_caps_ver() -> String {
    Hash::new(Algo::Sha_1, puppet_caps().ver).to_base64()
}

fn features(namespaces: &[&str]) -> std::collections::BTreeSet<String> {
    namespaces.iter().map(|&ns| ns.to_owned()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_caps_node_names_the_advertised_version_only() {
        let node = format!("{CAPS_NODE}#{}", puppet_caps_ver());
        assert!(is_puppet_node(&node));
        assert!(!is_puppet_node(&format!("{CAPS_NODE}#other")));
        assert!(!is_puppet_node("http://example.org/client#x"));
        assert_eq!(puppet_caps().node, CAPS_NODE);
        // SHA-1 of the verification string, base64: 28 characters.
        assert_eq!(puppet_caps_ver().len(), 28);
    }
}
