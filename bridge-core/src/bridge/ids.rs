//! Remote ids in Matrix ids: a ghost's localpart is `ghost_prefix` followed by the remote
//! id escaped with the Matrix spec's mapping from other character sets, which is
//! reversible: `_` becomes `__`, a capital letter `_` and its lower case, and every other
//! byte outside `a-z 0-9 . - /` becomes `=` and two lower-case hex digits.

/// Escapes `id` into characters allowed in a user localpart.
pub fn escape_localpart(id: &str) -> String {
    let mut escaped = String::with_capacity(id.len());
    for byte in id.bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'/' => escaped.push(char::from(byte)),
            b'_' => escaped.push_str("__"),
            b'A'..=b'Z' => {
                escaped.push('_');
                escaped.push(char::from(byte.to_ascii_lowercase()));
            }
            other => escaped.push_str(&format!("={other:02x}")),
        }
    }
    escaped
}

/// Reverses [`escape_localpart`]; `None` if `escaped` is not what escaping gives (so no
/// two Matrix ids stand for one remote id: `=61` is not another spelling of `a`).
pub fn unescape_localpart(escaped: &str) -> Option<String> {
    let id = unescape_any(escaped)?;
    (escape_localpart(&id) == escaped).then_some(id)
}

fn unescape_any(escaped: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(escaped.len());
    let mut input = escaped.bytes();
    while let Some(byte) = input.next() {
        match byte {
            b'_' => match input.next()? {
                b'_' => bytes.push(b'_'),
                lower @ b'a'..=b'z' => bytes.push(lower.to_ascii_uppercase()),
                _ => return None,
            },
            b'=' => {
                let high = char::from(input.next()?).to_digit(16)?;
                let low = char::from(input.next()?).to_digit(16)?;
                bytes.push(u8::try_from(high * 16 + low).ok()?);
            }
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'/' => bytes.push(byte),
            _ => return None,
        }
    }
    String::from_utf8(bytes).ok()
}

/// A deterministic Matrix transaction id for one send of one queued event: the same
/// event (and part) always gets the same id, and no two events share one.
pub(crate) fn transaction_id(network: &str, portal: &str, key: &str, part: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    for field in [network, portal, key, &part.to_string()] {
        // Length-prefixed, so that no two field lists hash alike.
        hash.update((field.len() as u64).to_be_bytes());
        hash.update(field.as_bytes());
    }
    let digest = hash.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("trestle.{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_stays_in_the_grammar() {
        for id in [
            "alice",
            "Bob_Smith",
            "a=b",
            "x y",
            "élan",
            "#chan/x",
            "",
            "__",
            "A",
        ] {
            let escaped = escape_localpart(id);
            assert!(
                escaped
                    .chars()
                    .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '=' | '-' | '/')),
                "{escaped}"
            );
            assert_eq!(unescape_localpart(&escaped).as_deref(), Some(id), "{id}");
        }
        assert_eq!(escape_localpart("Bob_Smith"), "_bob___smith");
        assert_eq!(escape_localpart("x y"), "x=20y");
        for bad in ["_", "_1", "=", "=zz", "A", "a b", "=61", "=5f"] {
            assert_eq!(unescape_localpart(bad), None, "{bad}");
        }
    }

    #[test]
    fn transaction_ids_differ_by_every_field() {
        let base = transaction_id("n", "p", "k", 0);
        assert_eq!(base, transaction_id("n", "p", "k", 0));
        assert_ne!(base, transaction_id("n", "p", "k", 1));
        assert_ne!(base, transaction_id("n", "pk", "", 0));
        assert_ne!(base, transaction_id("n", "p", "kk", 0));
    }
}
