//! Namespaces: where a reference lives, and who may touch it because of where it lives.
//!
//! | namespace         | who may access it (before the reference's own policy)        |
//! |-------------------|--------------------------------------------------------------|
//! | `public`          | everyone                                                     |
//! | `session:<id>`    | actors in session `<id>`                                     |
//! | `user:<id>`       | the user `<id>`                                              |
//! | `agent:<id>`      | the agent `<id>`                                             |
//! | `shared:<group>`  | everyone; restrict it with the policy's allowed actors       |
//! | any other name    | everyone (a custom namespace)                                |
//!
//! The system actor passes every rule. A `#[cached]` function's namespace may be a template, such as
//! `user:{user_id}`, filled from the actor in effect at each call ([`Actor::var`]).

use std::fmt;

use crate::model::actor::{Actor, ActorKind};

/// The longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 256;

/// Why a namespace (or template) is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NamespaceError {
    /// The text is not a namespace.
    #[error(
        "invalid namespace `{namespace}`: {reason}; use `public`, `session:<id>`, `user:<id>`, `agent:<id>`, \
         `shared:<group>` or a custom name of 1 to 256 printable characters without spaces or braces"
    )]
    Invalid {
        /// The offending text (cut to 100 characters).
        namespace: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A template names a variable the caller does not have.
    #[error(
        "namespace template `{template}` needs `{{{variable}}}`, but the calling actor has none: scope an actor that \
         has it (`Actor::user(..)` for user_id, `Actor::agent(..)` for agent_id, `.with_session(..)` for session_id, \
         `.with_attribute(\"{variable}\", ..)` for anything else)"
    )]
    MissingVariable {
        /// The template.
        template: String,
        /// The variable.
        variable: String,
    },
}

/// The kind of a namespace, with its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Namespace<'a> {
    /// `public`.
    Public,
    /// `session:<id>`.
    Session(&'a str),
    /// `user:<id>`.
    User(&'a str),
    /// `agent:<id>`.
    Agent(&'a str),
    /// `shared:<group>`.
    Shared(&'a str),
    /// Any other name.
    Custom(&'a str),
}

fn invalid(namespace: &str, reason: impl Into<String>) -> NamespaceError {
    NamespaceError::Invalid {
        namespace: namespace.chars().take(100).collect(),
        reason: reason.into(),
    }
}

impl<'a> Namespace<'a> {
    /// Parses and validates `text`.
    pub fn parse(text: &'a str) -> Result<Self, NamespaceError> {
        if text.is_empty() {
            return Err(invalid(text, "it is empty"));
        }
        if text.len() > MAX_NAMESPACE_LEN {
            return Err(invalid(
                text,
                format!("it is longer than {MAX_NAMESPACE_LEN} bytes"),
            ));
        }
        if let Some(c) = text
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '{' | '}'))
        {
            return Err(invalid(text, format!("it contains {c:?}")));
        }
        if text == "public" {
            return Ok(Self::Public);
        }
        let Some((prefix, id)) = text.split_once(':') else {
            return Ok(Self::Custom(text));
        };
        let make: fn(&'a str) -> Self = match prefix {
            "session" => Self::Session,
            "user" => Self::User,
            "agent" => Self::Agent,
            "shared" => Self::Shared,
            _ => return Ok(Self::Custom(text)),
        };
        if id.is_empty() {
            return Err(invalid(
                text,
                format!("`{prefix}:` needs an id after the colon"),
            ));
        }
        Ok(make(id))
    }

    /// Whether `actor` may access references in this namespace (the reference's policy decides what it may do).
    pub fn admits(self, actor: &Actor) -> bool {
        if actor.is_system() {
            return true;
        }
        match self {
            Self::Public | Self::Shared(_) | Self::Custom(_) => true,
            Self::Session(id) => actor.session_id.as_deref() == Some(id),
            Self::User(id) => actor.kind == ActorKind::User && actor.id.as_deref() == Some(id),
            Self::Agent(id) => actor.kind == ActorKind::Agent && actor.id.as_deref() == Some(id),
        }
    }
}

/// One piece of a namespace template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

/// A namespace with `{variable}` placeholders, such as `user:{user_id}`, filled per call from the actor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceTemplate {
    text: String,
    pieces: Vec<Piece>,
}

impl NamespaceTemplate {
    /// Parses `text`. A text without placeholders is a fixed namespace and must be valid as it is.
    pub fn parse(text: &str) -> Result<Self, NamespaceError> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return Err(invalid(text, "it has a `}` without a `{`"));
            }
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after
                .find('}')
                .ok_or_else(|| invalid(text, "it has a `{` without a `}`"))?;
            let name = &after[..close];
            if name.is_empty()
                || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || name.as_bytes()[0].is_ascii_digit()
            {
                return Err(invalid(
                    text,
                    format!("`{{{name}}}` is not a variable name (letters, digits and `_`)"),
                ));
            }
            pieces.push(Piece::Var(name.to_owned()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        let template = Self {
            text: text.to_owned(),
            pieces,
        };
        if template.is_fixed() {
            Namespace::parse(text)?;
        }
        Ok(template)
    }

    /// Whether it has no placeholders.
    pub fn is_fixed(&self) -> bool {
        !self.pieces.iter().any(|p| matches!(p, Piece::Var(_)))
    }

    /// The template text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The namespace for `actor`: every placeholder filled, and the result validated.
    pub fn fill(&self, actor: &Actor) -> Result<String, NamespaceError> {
        let mut out = String::with_capacity(self.text.len() + 16);
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(name) => match actor.var(name) {
                    Some(value) if !value.is_empty() => out.push_str(value),
                    _ => {
                        return Err(NamespaceError::MissingVariable {
                            template: self.text.clone(),
                            variable: name.clone(),
                        });
                    }
                },
            }
        }
        Namespace::parse(&out)?;
        Ok(out)
    }
}

impl fmt::Display for NamespaceTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_and_bad_names_are_refused() {
        assert_eq!(Namespace::parse("public"), Ok(Namespace::Public));
        assert_eq!(Namespace::parse("session:s1"), Ok(Namespace::Session("s1")));
        assert_eq!(Namespace::parse("user:alice"), Ok(Namespace::User("alice")));
        assert_eq!(Namespace::parse("agent:a:b"), Ok(Namespace::Agent("a:b")));
        assert_eq!(
            Namespace::parse("shared:team"),
            Ok(Namespace::Shared("team"))
        );
        assert_eq!(Namespace::parse("jobs"), Ok(Namespace::Custom("jobs")));
        assert_eq!(Namespace::parse("team:x"), Ok(Namespace::Custom("team:x")));
        for bad in ["", "user:", "session:", "a b", "x{y}", &"n".repeat(300)] {
            let err = Namespace::parse(bad).unwrap_err();
            assert!(err.to_string().contains("use `public`"), "{err}");
        }
    }

    #[test]
    fn rules_by_kind() {
        let alice = Actor::user("alice").with_session("s1");
        assert!(Namespace::Public.admits(&alice));
        assert!(Namespace::User("alice").admits(&alice));
        assert!(!Namespace::User("bob").admits(&alice));
        assert!(Namespace::Session("s1").admits(&alice));
        assert!(!Namespace::Session("s2").admits(&alice));
        assert!(
            !Namespace::Agent("alice").admits(&alice),
            "a user is not the agent of the same id"
        );
        assert!(Namespace::Agent("c").admits(&Actor::agent("c")));
        assert!(!Namespace::User("c").admits(&Actor::agent("c")));
        assert!(Namespace::Shared("g").admits(&Actor::anonymous_agent()));
        assert!(Namespace::User("bob").admits(&Actor::system()));
        assert!(!Namespace::Session("s1").admits(&Actor::anonymous_user()));
    }

    #[test]
    fn templates_fill_from_the_actor() {
        let t = NamespaceTemplate::parse("user:{user_id}").unwrap();
        assert!(!t.is_fixed());
        assert_eq!(t.fill(&Actor::user("alice")).unwrap(), "user:alice");
        let missing = t.fill(&Actor::agent("a")).unwrap_err();
        assert_eq!(
            missing,
            NamespaceError::MissingVariable {
                template: "user:{user_id}".into(),
                variable: "user_id".into()
            }
        );
        assert!(missing.to_string().contains("Actor::user"), "{missing}");
        let team = NamespaceTemplate::parse("shared:{team}-{session_id}").unwrap();
        let actor = Actor::agent("a")
            .with_session("s")
            .with_attribute("team", "blue");
        assert_eq!(team.fill(&actor).unwrap(), "shared:blue-s");
        // A filled value cannot smuggle in a space or a brace.
        let sneaky = Actor::user("a b");
        assert!(t.fill(&sneaky).is_err());
        for bad in ["user:{", "user:}", "user:{}", "user:{user id}", "{1x}"] {
            assert!(NamespaceTemplate::parse(bad).is_err(), "{bad}");
        }
        assert!(
            NamespaceTemplate::parse("user:").is_err(),
            "a fixed namespace is validated"
        );
        assert!(NamespaceTemplate::parse("jobs").unwrap().is_fixed());
    }
}
