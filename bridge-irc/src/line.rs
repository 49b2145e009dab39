//! One IRC line, read or written: IRCv3 tags, source, command and parameters.
//!
//! This is the only place lines are parsed or built. Parsing keeps every parameter as the
//! server sent it, because the meaning of some (MODE arguments above all) depends on the
//! server's ISUPPORT, which a fixed table cannot know: the `irc` crate's parser assigns MODE
//! arguments from such a table and rejects lines it does not expect, the class of bug that
//! once gave ops to the wrong user in another bridge. Building refuses CR, LF and NUL in
//! every part, so nothing a Matrix user typed can end a line early and start a command.

use std::fmt::Write as _;

/// Why a line cannot be built or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// A part of the line contains CR, LF or NUL.
    #[error("a line must not contain CR, LF or NUL")]
    ControlCharacter,
    /// A parameter other than the last contains a space or starts with `:`, or is empty.
    #[error("parameter `{0}` cannot be a middle parameter")]
    BadMiddle(String),
    /// The line has no command.
    #[error("no command in the line")]
    NoCommand,
}

/// A parsed or built IRC line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Line {
    /// IRCv3 message tags, values unescaped (`None`: a tag without a value).
    pub tags: Vec<(String, Option<String>)>,
    /// The source (`nick!user@host` or a server name), without the `:`.
    pub source: Option<String>,
    /// The command, upper-cased (`PRIVMSG`, `001`).
    pub command: String,
    /// The parameters, the trailing one included.
    pub params: Vec<String>,
}

impl Line {
    /// A line to send: `command` with `params`.
    pub fn new<I, S>(command: &str, params: I) -> Line
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Line {
            command: command.to_owned(),
            params: params.into_iter().map(Into::into).collect(),
            ..Line::default()
        }
    }

    /// The same line with a client tag (`+typing`) or label added.
    pub fn with_tag(mut self, key: &str, value: Option<&str>) -> Line {
        self.tags.push((key.to_owned(), value.map(str::to_owned)));
        self
    }

    /// Parses a line as read (without its CR LF; trailing CR or LF are dropped).
    pub fn parse(raw: &str) -> Result<Line, LineError> {
        let mut rest = raw.trim_end_matches(['\r', '\n']);
        if rest.contains(['\r', '\n', '\0']) {
            return Err(LineError::ControlCharacter);
        }
        let mut line = Line::default();
        if let Some(tagged) = rest.strip_prefix('@') {
            let (tags, after) = tagged.split_once(' ').unwrap_or((tagged, ""));
            for tag in tags.split(';').filter(|tag| !tag.is_empty()) {
                let (key, value) = match tag.split_once('=') {
                    Some((key, value)) => (key, Some(unescape_tag_value(value))),
                    None => (tag, None),
                };
                line.tags.push((key.to_owned(), value));
            }
            rest = after.trim_start_matches(' ');
        }
        if let Some(sourced) = rest.strip_prefix(':') {
            let (source, after) = sourced.split_once(' ').unwrap_or((sourced, ""));
            line.source = Some(source.to_owned());
            rest = after.trim_start_matches(' ');
        }
        let (command, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
        if command.is_empty() {
            return Err(LineError::NoCommand);
        }
        line.command = command.to_ascii_uppercase();
        loop {
            rest = rest.trim_start_matches(' ');
            if rest.is_empty() {
                break;
            }
            if let Some(trailing) = rest.strip_prefix(':') {
                line.params.push(trailing.to_owned());
                break;
            }
            let (param, after) = rest.split_once(' ').unwrap_or((rest, ""));
            line.params.push(param.to_owned());
            rest = after;
        }
        Ok(line)
    }

    /// The line as sent, CR LF included; refuses CR, LF or NUL anywhere, and middle
    /// parameters that would not read back as one parameter.
    pub fn to_wire(&self) -> Result<String, LineError> {
        let mut out = String::with_capacity(64);
        if !self.tags.is_empty() {
            out.push('@');
            for (index, (key, value)) in self.tags.iter().enumerate() {
                if index > 0 {
                    out.push(';');
                }
                check_word(key)?;
                out.push_str(key);
                if let Some(value) = value {
                    out.push('=');
                    escape_tag_value(value, &mut out)?;
                }
            }
            out.push(' ');
        }
        if let Some(source) = &self.source {
            check_word(source)?;
            let _ = write!(out, ":{source} ");
        }
        check_word(&self.command)?;
        if self.command.is_empty() {
            return Err(LineError::NoCommand);
        }
        out.push_str(&self.command);
        for (index, param) in self.params.iter().enumerate() {
            if param.contains(['\r', '\n', '\0']) {
                return Err(LineError::ControlCharacter);
            }
            out.push(' ');
            if index + 1 == self.params.len() {
                // The last parameter always goes as a trailing one: it may hold spaces.
                out.push(':');
            } else if param.is_empty() || param.starts_with(':') || param.contains(' ') {
                return Err(LineError::BadMiddle(param.clone()));
            }
            out.push_str(param);
        }
        out.push_str("\r\n");
        Ok(out)
    }

    /// The value of tag `key`, if the line has it with a value.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(name, _)| name == key)
            .and_then(|(_, value)| value.as_deref())
    }

    /// The nick of the source (`nick` of `nick!user@host`).
    pub fn source_nick(&self) -> Option<&str> {
        let source = self.source.as_deref()?;
        Some(source.split(['!', '@']).next().unwrap_or(source))
    }

    /// Parameter `index`, or `""`.
    pub fn param(&self, index: usize) -> &str {
        self.params.get(index).map_or("", String::as_str)
    }
}

/// A tag key, the source or the command: no control characters, no spaces.
fn check_word(word: &str) -> Result<(), LineError> {
    if word.contains(['\r', '\n', '\0']) {
        return Err(LineError::ControlCharacter);
    }
    if word.contains(' ') {
        return Err(LineError::BadMiddle(word.to_owned()));
    }
    Ok(())
}

/// Escapes a tag value (IRCv3 message tags: `;`, space, `\`, CR and LF).
fn escape_tag_value(value: &str, out: &mut String) -> Result<(), LineError> {
    for c in value.chars() {
        match c {
            ';' => out.push_str("\\:"),
            ' ' => out.push_str("\\s"),
            '\\' => out.push_str("\\\\"),
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            '\0' => return Err(LineError::ControlCharacter),
            c => out.push(c),
        }
    }
    Ok(())
}

fn unescape_tag_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(':') => out.push(';'),
            Some('s') => out.push(' '),
            Some('r') => out.push('\r'),
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            // A lone trailing backslash is dropped (IRCv3 message-tags).
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_line_parses() {
        let line = Line::parse(
            "@time=2026-01-01T00:00:00.000Z;msgid=ab\\:c\\sd;+typing :nick!u@h PRIVMSG #chan :hello :world\r\n",
        )
        .unwrap();
        assert_eq!(line.tag("time"), Some("2026-01-01T00:00:00.000Z"));
        assert_eq!(line.tag("msgid"), Some("ab;c d"));
        assert_eq!(line.tags[2], ("+typing".to_owned(), None));
        assert_eq!(line.source_nick(), Some("nick"));
        assert_eq!(line.command, "PRIVMSG");
        assert_eq!(line.params, ["#chan", "hello :world"]);
    }

    #[test]
    fn modes_keep_every_argument_in_place() {
        let line = Line::parse(":op MODE #c +ojk-l alice 5:10 key").unwrap();
        assert_eq!(line.params, ["#c", "+ojk-l", "alice", "5:10", "key"]);
        let bare = Line::parse("ping  x").unwrap();
        assert_eq!(bare.command, "PING");
        assert_eq!(bare.params, ["x"]);
        assert_eq!(Line::parse(":src").unwrap_err(), LineError::NoCommand);
    }

    #[test]
    fn building_refuses_line_breaks_everywhere() {
        let ok = Line::new("PRIVMSG", ["#c", "hi there"])
            .with_tag("+draft/reply", Some("a;b c"))
            .to_wire()
            .unwrap();
        assert_eq!(ok, "@+draft/reply=a\\:b\\sc PRIVMSG #c :hi there\r\n");
        for bad in ["a\rb", "a\nb", "a\0b"] {
            assert_eq!(
                Line::new("PRIVMSG", ["#c", bad]).to_wire(),
                Err(LineError::ControlCharacter)
            );
            assert_eq!(
                Line::new("PRIVMSG", [bad, "x"]).to_wire(),
                Err(LineError::ControlCharacter)
            );
            assert_eq!(
                Line::new(bad, ["x"]).to_wire(),
                Err(LineError::ControlCharacter)
            );
        }
        assert!(matches!(
            Line::new("JOIN", ["#a b", "key"]).to_wire(),
            Err(LineError::BadMiddle(_))
        ));
        assert!(matches!(
            Line::new("JOIN", [":x", "key"]).to_wire(),
            Err(LineError::BadMiddle(_))
        ));
    }

    #[test]
    fn built_lines_read_back() {
        let line =
            Line::new("PRIVMSG", ["#c", ":starts with a colon"]).with_tag("label", Some("7"));
        let wire = line.to_wire().unwrap();
        assert_eq!(Line::parse(&wire).unwrap(), line);
    }
}
