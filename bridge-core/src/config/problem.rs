//! What can be wrong with a config file, and the collector that gathers every problem
//! before loading gives up.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// One thing wrong with the configuration, at a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path into the file, with list indexes in brackets:
    /// `appservice.bind`, `irc.networks[1].host`. Empty for the file as a whole.
    pub path: String,
    /// What is wrong there, in words meant for the operator. Never contains a secret.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same problem with its path placed under `prefix` (a section name).
    pub fn under(self, prefix: &str) -> Self {
        Self {
            path: join_path(prefix, &self.path),
            message: self.message,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Joins a parent key path and a child path (`a` + `b` = `a.b`, `a` + `[0].b` = `a[0].b`).
pub(crate) fn join_path(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_owned()
    } else if child.is_empty() {
        parent.to_owned()
    } else if child.starts_with('[') {
        format!("{parent}{child}")
    } else {
        format!("{parent}.{child}")
    }
}

/// Failure to load a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// The file is not YAML (or not a mapping at the top), or the environment overrides
    /// could not be applied; nothing more could be checked.
    #[error("cannot parse config file {}: {message}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// The parser's message, with line and column when it has them.
        message: String,
    },
    /// The file parses but has problems; all of them are listed.
    #[error("{}", describe_problems(path, problems))]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Every problem found, never empty.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems of an [`ConfigError::Invalid`] config; empty for other errors.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Invalid { problems, .. } => problems,
            Self::Read { .. } | Self::Parse { .. } => &[],
        }
    }
}

fn describe_problems(path: &std::path::Path, problems: &[Problem]) -> String {
    let count = match problems.len() {
        1 => "1 problem".to_owned(),
        n => format!("{n} problems"),
    };
    let mut text = format!("config file {} has {count}:", path.display());
    for problem in problems {
        text.push_str("\n  ");
        text.push_str(&problem.to_string());
    }
    text
}

/// Collects problems while a config is checked.
///
/// One key gets at most one problem: once a value has been reported (say as having the
/// wrong type, after which it is dropped), a later "missing" report for the same key would
/// only be noise.
#[derive(Debug, Default)]
pub(crate) struct Problems {
    list: Vec<Problem>,
    seen: HashSet<String>,
}

impl Problems {
    /// Records a problem unless its key already has one.
    pub(crate) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        let path = path.into();
        if self.seen.insert(path.clone()) {
            self.list.push(Problem::new(path, message));
        }
    }

    /// Marks `path` as already dealt with, so that later problems at it are dropped.
    pub(crate) fn silence(&mut self, path: impl Into<String>) {
        self.seen.insert(path.into());
    }

    /// Whether `path` already has a problem (or was silenced).
    pub(crate) fn has(&self, path: &str) -> bool {
        self.seen.contains(path)
    }

    /// Orders the problems by section, in the order of `sections` (keys that are no
    /// section, such as a misspelt one, first), keeping the order within each section.
    pub(crate) fn sort_by_section(&mut self, sections: &[&str]) {
        self.list.sort_by_key(|problem| {
            let section = problem.path.split(['.', '[']).next().unwrap_or_default();
            sections
                .iter()
                .position(|known| *known == section)
                .map_or(0, |index| index + 1)
        });
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn into_vec(self) -> Vec<Problem> {
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_with_dots_and_brackets() {
        assert_eq!(join_path("irc", "networks[0].host"), "irc.networks[0].host");
        assert_eq!(join_path("irc.networks", "[0]"), "irc.networks[0]");
        assert_eq!(join_path("", "homeserver"), "homeserver");
        assert_eq!(join_path("xmpp", ""), "xmpp");
    }

    #[test]
    fn one_problem_per_key() {
        let mut problems = Problems::default();
        problems.push("a.b", "invalid type");
        problems.push("a.b", "missing");
        problems.silence("a.c");
        problems.push("a.c", "missing");
        problems.push("a.d", "bad");
        assert_eq!(
            problems.into_vec(),
            [
                Problem::new("a.b", "invalid type"),
                Problem::new("a.d", "bad")
            ]
        );
    }

    #[test]
    fn problems_are_grouped_by_section() {
        let mut problems = Problems::default();
        problems.push("logging.colour", "unknown key");
        problems.push("irc.networks[0].prot", "unknown key");
        problems.push("homeserver.url", "not a URL");
        problems.push("logging.level", "bad");
        problems.push("homeservr", "unknown key");
        problems.sort_by_section(&["homeserver", "logging", "irc"]);
        let paths: Vec<String> = problems.into_vec().into_iter().map(|p| p.path).collect();
        assert_eq!(
            paths,
            [
                "homeservr",
                "homeserver.url",
                "logging.colour",
                "logging.level",
                "irc.networks[0].prot"
            ]
        );
    }

    #[test]
    fn invalid_lists_every_problem() {
        let error = ConfigError::Invalid {
            path: "config.yaml".into(),
            problems: vec![Problem::new("a", "x"), Problem::new("b.c", "y")],
        };
        assert_eq!(
            error.to_string(),
            "config file config.yaml has 2 problems:\n  a: x\n  b.c: y"
        );
        assert_eq!(error.problems().len(), 2);
    }
}
