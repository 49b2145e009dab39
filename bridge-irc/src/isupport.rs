//! What a server tells about itself in RPL_ISUPPORT (005), and what follows from it:
//! how names compare (CASEMAPPING), how long a nick may be, what starts a channel name,
//! which channel modes take an argument, and which prefix modes rank users.

/// How the server folds case when it compares nicks and channel names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CaseMapping {
    /// Only `A-Z`.
    Ascii,
    /// `A-Z`, and `[]\~` as the upper case of `{}|^` (the default of RFC 1459).
    #[default]
    Rfc1459,
    /// As `Rfc1459` without `~`/`^`.
    Rfc1459Strict,
}

impl CaseMapping {
    /// `name` folded to lower case, for comparing and as a key.
    pub fn fold(self, name: &str) -> String {
        name.chars()
            .map(|c| match (self, c) {
                (_, 'A'..='Z') => c.to_ascii_lowercase(),
                (CaseMapping::Rfc1459 | CaseMapping::Rfc1459Strict, '[') => '{',
                (CaseMapping::Rfc1459 | CaseMapping::Rfc1459Strict, ']') => '}',
                (CaseMapping::Rfc1459 | CaseMapping::Rfc1459Strict, '\\') => '|',
                (CaseMapping::Rfc1459, '~') => '^',
                _ => c,
            })
            .collect()
    }
}

/// The server's ISUPPORT, with the defaults of RFC 1459 for what it does not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// How names compare.
    pub casemapping: CaseMapping,
    /// The longest nick.
    pub nicklen: usize,
    /// The characters that start a channel name.
    pub chantypes: String,
    /// Prefix modes and their symbols, highest rank first (`o` `@`, `v` `+`).
    pub prefixes: Vec<(char, char)>,
    /// Channel modes that always take an argument (lists, and type B).
    pub modes_with_arg: String,
    /// Channel modes that take an argument only when set (type C).
    pub modes_with_arg_when_set: String,
    /// The network's name, if given.
    pub network: Option<String>,
}

impl Default for ServerInfo {
    fn default() -> ServerInfo {
        ServerInfo {
            casemapping: CaseMapping::Rfc1459,
            nicklen: 9,
            chantypes: "#&".to_owned(),
            prefixes: vec![('o', '@'), ('v', '+')],
            modes_with_arg: "beIk".to_owned(),
            modes_with_arg_when_set: "l".to_owned(),
            network: None,
        }
    }
}

impl ServerInfo {
    /// Takes in the tokens of one RPL_ISUPPORT line (its parameters without the nick
    /// and the trailing text).
    pub fn apply(&mut self, tokens: &[String]) {
        for token in tokens {
            let (key, value) = token.split_once('=').unwrap_or((token, ""));
            match key {
                "CASEMAPPING" => {
                    self.casemapping = match value {
                        "ascii" => CaseMapping::Ascii,
                        "strict-rfc1459" => CaseMapping::Rfc1459Strict,
                        _ => CaseMapping::Rfc1459,
                    }
                }
                "NICKLEN" | "MAXNICKLEN" => {
                    if let Ok(len) = value.parse::<usize>()
                        && len > 0
                    {
                        self.nicklen = len;
                    }
                }
                "CHANTYPES" if !value.is_empty() => self.chantypes = value.to_owned(),
                "PREFIX" => {
                    // `(ov)@+`
                    if let Some((modes, symbols)) =
                        value.strip_prefix('(').and_then(|v| v.split_once(')'))
                        && modes.chars().count() == symbols.chars().count()
                    {
                        self.prefixes = modes.chars().zip(symbols.chars()).collect();
                    }
                }
                "CHANMODES" => {
                    let groups: Vec<&str> = value.split(',').collect();
                    if groups.len() >= 3 {
                        self.modes_with_arg = format!("{}{}", groups[0], groups[1]);
                        self.modes_with_arg_when_set = groups[2].to_owned();
                    }
                }
                "NETWORK" => self.network = Some(value.to_owned()),
                _ => {}
            }
        }
    }

    /// Whether `name` is a channel name on this server.
    pub fn is_channel(&self, name: &str) -> bool {
        name.chars()
            .next()
            .is_some_and(|first| self.chantypes.contains(first))
    }

    /// A nick from a NAMES reply without its status prefixes (`@+nick` → `nick`), and the
    /// prefix modes they stand for (`ov`; all of them with multi-prefix).
    pub fn strip_prefixes<'a>(&self, entry: &'a str) -> (&'a str, String) {
        let mut modes = String::new();
        let mut rest = entry;
        while let Some(first) = rest.chars().next() {
            let Some((mode, _)) = self.prefixes.iter().find(|(_, s)| *s == first) else {
                break;
            };
            modes.push(*mode);
            rest = &rest[first.len_utf8()..];
        }
        // userhost-in-names: `nick!user@host`.
        let nick = rest.split('!').next().unwrap_or(rest);
        (nick, modes)
    }

    /// The changes of a channel MODE line, mode by mode, each with its argument: the
    /// argument list is consumed exactly as the server's CHANMODES and PREFIX say.
    pub fn mode_changes(&self, modes: &str, args: &[String]) -> Vec<ModeChange> {
        let mut changes = Vec::new();
        let mut args = args.iter();
        let mut adding = true;
        for mode in modes.chars() {
            match mode {
                '+' => adding = true,
                '-' => adding = false,
                mode => {
                    let is_prefix = self.prefixes.iter().any(|(m, _)| *m == mode);
                    let takes_arg = is_prefix
                        || self.modes_with_arg.contains(mode)
                        || (adding && self.modes_with_arg_when_set.contains(mode));
                    let arg = if takes_arg {
                        args.next().cloned()
                    } else {
                        None
                    };
                    changes.push(ModeChange { adding, mode, arg });
                }
            }
        }
        changes
    }

    /// The rank of prefix mode `mode` (0 is the highest), if it is one.
    pub fn prefix_rank(&self, mode: char) -> Option<usize> {
        self.prefixes.iter().position(|(m, _)| *m == mode)
    }
}

/// One change of a channel MODE line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModeChange {
    /// `+` or `-`.
    pub adding: bool,
    /// The mode letter.
    pub mode: char,
    /// Its argument, if it takes one.
    pub arg: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(tokens: &[&str]) -> ServerInfo {
        let mut info = ServerInfo::default();
        info.apply(&tokens.iter().map(|t| (*t).to_owned()).collect::<Vec<_>>());
        info
    }

    #[test]
    fn casemappings_fold_as_named() {
        assert_eq!(CaseMapping::Rfc1459.fold("Nick[]\\~"), "nick{}|^");
        assert_eq!(CaseMapping::Rfc1459Strict.fold("Nick[]\\~"), "nick{}|~");
        assert_eq!(CaseMapping::Ascii.fold("Nick[]\\~"), "nick[]\\~");
        assert_eq!(info(&["CASEMAPPING=ascii"]).casemapping, CaseMapping::Ascii);
    }

    #[test]
    fn modes_take_arguments_as_the_server_says() {
        // InspIRCd-like: +j (join throttle) is type C, +f is type B, q/a/o/h/v prefixes.
        let server = info(&[
            "PREFIX=(qaohv)~&@%+",
            "CHANMODES=IXbeg,fk,Hjl,ACKMNOPQRSTcimnprstz",
        ]);
        let args: Vec<String> = ["5:10", "bob", "carol", "30"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let changes = server.mode_changes("+jo-v+lm", &args);
        let summary: Vec<String> = changes
            .iter()
            .map(|c| {
                format!(
                    "{}{}{}",
                    if c.adding { '+' } else { '-' },
                    c.mode,
                    c.arg
                        .as_deref()
                        .map(|a| format!(" {a}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        assert_eq!(summary, ["+j 5:10", "+o bob", "-v carol", "+l 30", "+m"]);
        // `-l` takes no argument, so the op after it goes to the right user.
        let changes = server.mode_changes("-lo", &["dave".to_owned()]);
        assert_eq!(changes[0].arg, None);
        assert_eq!(changes[1].arg.as_deref(), Some("dave"));
    }

    #[test]
    fn names_entries_lose_their_prefixes() {
        let server = info(&["PREFIX=(qaohv)~&@%+"]);
        assert_eq!(server.strip_prefixes("@+alice"), ("alice", "ov".to_owned()));
        assert_eq!(server.strip_prefixes("+@bob!u@h"), ("bob", "vo".to_owned()));
        assert_eq!(server.strip_prefixes("carol"), ("carol", String::new()));
        assert!(server.is_channel("#x") && !server.is_channel("x"));
    }
}
