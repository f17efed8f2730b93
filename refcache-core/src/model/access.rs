//! Access control: permissions, the policy every reference carries, and the one decision every read path uses.
//!
//! What each operation needs:
//!
//! | operation                                             | permission          |
//! |-------------------------------------------------------|---------------------|
//! | see a reference: poll its status, info, list it       | `READ` or `EXECUTE` |
//! | read its value: complete response, preview, page, full | `READ`              |
//! | pass it to a tool as an input (reference resolution)  | `READ` or `EXECUTE` |
//! | cancel or retry its task                              | `EXECUTE`           |
//! | delete it, clear its namespace                        | `DELETE`            |
//!
//! `EXECUTE` without `READ` is private computation: an agent can hand the reference to a tool, which receives the
//! value, but the agent never sees it. An actor that may not even see a reference gets the same error as for an
//! id that does not exist ([`RefCacheError::NotFound`](crate::RefCacheError::NotFound)).

use serde::{Deserialize, Serialize};

use crate::model::actor::{Actor, ActorKind};
use crate::model::namespace::Namespace;

bitflags::bitflags! {
    /// What an actor may do with a reference.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct Permissions: u8 {
        /// See the value (and the reference).
        const READ = 1;
        /// Write a value (reserved: no operation of this version writes values directly).
        const WRITE = 1 << 1;
        /// Change a reference (reserved: no operation of this version updates values).
        const UPDATE = 1 << 2;
        /// Delete it.
        const DELETE = 1 << 3;
        /// Use it without seeing it: pass it to a tool; cancel or retry its task.
        const EXECUTE = 1 << 4;
        /// Read, write, update and delete.
        const CRUD = Self::READ.bits() | Self::WRITE.bits() | Self::UPDATE.bits() | Self::DELETE.bits();
        /// Everything.
        const FULL = Self::CRUD.bits() | Self::EXECUTE.bits();
    }
}

impl std::fmt::Display for Permissions {
    /// `READ | EXECUTE`; `none` for no permission.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        bitflags::parser::to_writer(self, f)
    }
}

/// The text of a flag set, built on the stack: at most `READ | WRITE | UPDATE | DELETE | EXECUTE | 0xe0`.
struct FlagText {
    buf: [u8; 64],
    len: usize,
}

impl std::fmt::Write for FlagText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The same text as bitflags' own serde (`READ | EXECUTE`, an empty string for none; the bits as a number in a
/// binary format), handed to the serializer in one piece: through `collect_str`, serde_json escaped every fragment
/// on its own, about 3k instructions per flag set, three per policy (#17 §3, the Redis client's profile).
impl Serialize for Permissions {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            return bitflags::serde::serialize(self, serializer);
        }
        let mut text = FlagText {
            buf: [0; 64],
            len: 0,
        };
        if bitflags::parser::to_writer(self, &mut text).is_err() {
            return bitflags::serde::serialize(self, serializer);
        }
        match std::str::from_utf8(&text.buf[..text.len]) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => bitflags::serde::serialize(self, serializer),
        }
    }
}

/// Reads what bitflags' own serde reads: the text as this version writes it (the five names joined by ` | `) is
/// matched directly; anything else (other spacing, `CRUD`, `FULL`, hex bits, errors) goes through bitflags'
/// parser, so every form stored before parses as it did, and bad text is the same error.
impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;

        impl serde::de::Visitor<'_> for Text {
            type Value = Permissions;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a string value of `|` separated flags")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Permissions, E> {
                Permissions::parse(text).map_err(E::custom)
            }
        }

        if deserializer.is_human_readable() {
            deserializer.deserialize_str(Text)
        } else {
            bitflags::serde::deserialize(deserializer)
        }
    }
}

impl Permissions {
    /// A flag set from its text, as bitflags' parser reads it (the usual form without it).
    fn parse(text: &str) -> Result<Self, bitflags::parser::ParseError> {
        let mut flags = Self::empty();
        if text.is_empty() {
            return Ok(flags);
        }
        for name in text.split(" | ") {
            flags |= match name {
                "READ" => Self::READ,
                "WRITE" => Self::WRITE,
                "UPDATE" => Self::UPDATE,
                "DELETE" => Self::DELETE,
                "EXECUTE" => Self::EXECUTE,
                _ => return bitflags::parser::from_str(text),
            };
        }
        Ok(flags)
    }

    /// Whether these permissions let one see the reference at all (`READ` or `EXECUTE`).
    pub fn can_see(self) -> bool {
        self.intersects(Self::READ | Self::EXECUTE)
    }
}

/// Why a policy is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// An actor pattern is not a valid glob.
    #[error(
        "invalid actor pattern `{pattern}`: {message}; patterns are globs over `<kind>:<id>`, such as `user:alice`, \
         `agent:*` or `agent:claude-?`"
    )]
    Pattern {
        /// The pattern.
        pattern: String,
        /// What the glob parser said.
        message: String,
    },
}

/// Who may do what with a reference.
///
/// Every reference carries one: the policy of the `#[cached]` function that made it (attribute `policy`), or the
/// default [`AccessPolicy::public`]. The decision, in order:
/// 1. the system actor may do everything;
/// 2. an actor matching a `denied_actors` pattern may do nothing;
/// 3. when `allowed_actors` is set, an actor matching none of its patterns may do nothing;
/// 4. when the policy is bound to a session, only actors in that session may do anything (and a task made in a
///    session is bound to it, as if its policy said so);
/// 5. the namespace's rule ([`Namespace::admits`]) must admit the actor;
/// 6. then the owner gets `owner_permissions`, a user `user_permissions`, an agent `agent_permissions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AccessPolicy {
    /// What users may do.
    pub user_permissions: Permissions,
    /// What agents may do.
    pub agent_permissions: Permissions,
    /// The owner, as an actor pattern (`user:alice`), when there is one.
    #[serde(default)]
    pub owner: Option<String>,
    /// What the owner may do (on top of its kind's permissions).
    pub owner_permissions: Permissions,
    /// When set, only actors matching one of these patterns may do anything.
    #[serde(default)]
    pub allowed_actors: Option<Vec<String>>,
    /// Actors matching any of these patterns may do nothing.
    #[serde(default)]
    pub denied_actors: Vec<String>,
    /// When set, only actors in this session may do anything.
    #[serde(default)]
    pub session_id: Option<String>,
}

impl Default for AccessPolicy {
    fn default() -> Self {
        Self::public()
    }
}

impl AccessPolicy {
    /// The default policy ([`public`](Self::public)) behind an `Arc` shared by every record, spec and value that
    /// carries it: a clone is a reference-count increment, where `Arc::default()` allocates a new one (a task
    /// took two such allocations, then replaced them with its function's policy).
    pub(crate) fn shared_default() -> std::sync::Arc<Self> {
        static DEFAULT: std::sync::LazyLock<std::sync::Arc<AccessPolicy>> =
            std::sync::LazyLock::new(|| std::sync::Arc::new(AccessPolicy::public()));
        DEFAULT.clone()
    }

    /// Users may do everything; agents may read and execute. The default.
    pub fn public() -> Self {
        Self {
            user_permissions: Permissions::FULL,
            agent_permissions: Permissions::READ | Permissions::EXECUTE,
            owner: None,
            owner_permissions: Permissions::FULL,
            allowed_actors: None,
            denied_actors: Vec::new(),
            session_id: None,
        }
    }

    /// Users may do everything; agents nothing.
    pub fn user_only() -> Self {
        Self {
            agent_permissions: Permissions::empty(),
            ..Self::public()
        }
    }

    /// Users and agents may read, and nothing else.
    pub fn read_only() -> Self {
        Self {
            user_permissions: Permissions::READ,
            agent_permissions: Permissions::READ,
            ..Self::public()
        }
    }

    /// Users may do everything; agents may only execute: pass the reference to tools, never read the value.
    pub fn execute_only() -> Self {
        Self {
            agent_permissions: Permissions::EXECUTE,
            ..Self::public()
        }
    }

    /// The preset called `name`: `public`, `user_only`, `read_only` or `execute_only`.
    pub fn preset(name: &str) -> Option<Self> {
        match name {
            "public" => Some(Self::public()),
            "user_only" => Some(Self::user_only()),
            "read_only" => Some(Self::read_only()),
            "execute_only" => Some(Self::execute_only()),
            _ => None,
        }
    }

    /// The same policy with these user permissions.
    pub fn users(mut self, permissions: Permissions) -> Self {
        self.user_permissions = permissions;
        self
    }

    /// The same policy with these agent permissions.
    pub fn agents(mut self, permissions: Permissions) -> Self {
        self.agent_permissions = permissions;
        self
    }

    /// The same policy, owned by the actors matching `pattern` with `permissions`.
    pub fn owner(mut self, pattern: impl Into<String>, permissions: Permissions) -> Self {
        self.owner = Some(pattern.into());
        self.owner_permissions = permissions;
        self
    }

    /// The same policy, also allowing actors that match `pattern` (and, from the first call on, only allowed ones).
    pub fn allow(mut self, pattern: impl Into<String>) -> Self {
        self.allowed_actors
            .get_or_insert_with(Vec::new)
            .push(pattern.into());
        self
    }

    /// The same policy, denying actors that match `pattern`.
    pub fn deny(mut self, pattern: impl Into<String>) -> Self {
        self.denied_actors.push(pattern.into());
        self
    }

    /// The same policy, bound to session `id`.
    pub fn bind_session(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }

    /// Checks every actor pattern.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let patterns = self
            .owner
            .iter()
            .chain(self.allowed_actors.iter().flatten())
            .chain(&self.denied_actors);
        for pattern in patterns {
            glob::Pattern::new(pattern).map_err(|e| PolicyError::Pattern {
                pattern: pattern.clone(),
                message: e.msg.to_owned(),
            })?;
        }
        Ok(())
    }

    /// Whether every actor outside any session may read any reference with this policy in an open namespace: the
    /// check can then be skipped on the hit path.
    pub fn reads_for_everyone(&self) -> bool {
        self.user_permissions.contains(Permissions::READ)
            && self.agent_permissions.contains(Permissions::READ)
            && self.allowed_actors.is_none()
            && self.denied_actors.is_empty()
            && self.session_id.is_none()
    }

    /// What `actor` may do with a reference under this policy, in `namespace`, made in `task_session`.
    pub fn permissions_for(
        &self,
        actor: &Actor,
        namespace: &str,
        task_session: Option<&str>,
    ) -> Permissions {
        if actor.is_system() {
            return Permissions::FULL;
        }
        let name = actor.pattern_name();
        let matches =
            |pattern: &String| glob::Pattern::new(pattern).is_ok_and(|p| p.matches(&name));
        if self.denied_actors.iter().any(matches) {
            return Permissions::empty();
        }
        if let Some(allowed) = &self.allowed_actors
            && !allowed.iter().any(matches)
        {
            return Permissions::empty();
        }
        let in_session =
            |bound: Option<&str>| bound.is_none_or(|s| actor.session_id.as_deref() == Some(s));
        if !in_session(self.session_id.as_deref()) || !in_session(task_session) {
            return Permissions::empty();
        }
        // A namespace that does not parse admits nobody but the system.
        if !Namespace::parse(namespace).is_ok_and(|ns| ns.admits(actor)) {
            return Permissions::empty();
        }
        let mut granted = match actor.kind {
            ActorKind::User => self.user_permissions,
            ActorKind::Agent => self.agent_permissions,
            ActorKind::System => Permissions::FULL,
        };
        if self.owner.as_ref().is_some_and(matches) {
            granted |= self.owner_permissions;
        }
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets() {
        let user = Actor::user("u");
        let agent = Actor::agent("a");
        let of = |p: &AccessPolicy, a: &Actor| p.permissions_for(a, "public", None);
        assert_eq!(of(&AccessPolicy::public(), &user), Permissions::FULL);
        assert_eq!(
            of(&AccessPolicy::public(), &agent),
            Permissions::READ | Permissions::EXECUTE
        );
        assert_eq!(of(&AccessPolicy::user_only(), &agent), Permissions::empty());
        assert_eq!(of(&AccessPolicy::user_only(), &user), Permissions::FULL);
        assert_eq!(of(&AccessPolicy::read_only(), &user), Permissions::READ);
        assert_eq!(
            of(&AccessPolicy::execute_only(), &agent),
            Permissions::EXECUTE
        );
        assert!(of(&AccessPolicy::execute_only(), &agent).can_see());
        for p in ["public", "user_only", "read_only", "execute_only"] {
            assert!(AccessPolicy::preset(p).is_some());
        }
        assert!(AccessPolicy::preset("open").is_none());
        assert_eq!(
            of(&AccessPolicy::user_only(), &Actor::system()),
            Permissions::FULL,
            "the system may do everything"
        );
    }

    #[test]
    fn patterns_owner_and_session() {
        let policy = AccessPolicy::public()
            .deny("agent:evil-*")
            .owner("agent:boss", Permissions::FULL);
        assert_eq!(
            policy.permissions_for(&Actor::agent("evil-1"), "public", None),
            Permissions::empty()
        );
        assert_eq!(
            policy.permissions_for(&Actor::agent("boss"), "public", None),
            Permissions::FULL
        );
        let allow = AccessPolicy::public().allow("user:alice").allow("agent:*");
        assert!(
            allow
                .permissions_for(&Actor::user("alice"), "public", None)
                .contains(Permissions::READ)
        );
        assert!(
            allow
                .permissions_for(&Actor::agent("x"), "public", None)
                .can_see()
        );
        assert_eq!(
            allow.permissions_for(&Actor::user("bob"), "public", None),
            Permissions::empty()
        );
        let bound = AccessPolicy::public().bind_session("s1");
        assert!(
            bound
                .permissions_for(&Actor::user("u").with_session("s1"), "public", None)
                .can_see()
        );
        assert!(
            !bound
                .permissions_for(&Actor::user("u").with_session("s2"), "public", None)
                .can_see()
        );
        assert!(
            !bound
                .permissions_for(&Actor::user("u"), "public", None)
                .can_see()
        );
        assert!(
            !AccessPolicy::public()
                .permissions_for(&Actor::user("u"), "public", Some("s1"))
                .can_see(),
            "a task made in a session is bound to it"
        );
        assert!(
            !AccessPolicy::public()
                .permissions_for(&Actor::user("bob"), "user:alice", None)
                .can_see(),
            "the namespace rule applies before the policy"
        );
        assert!(AccessPolicy::public().deny("[").validate().is_err());
        assert!(policy.validate().is_ok());
        assert!(!policy.reads_for_everyone());
        assert!(AccessPolicy::public().reads_for_everyone());
        assert!(!AccessPolicy::execute_only().reads_for_everyone());
    }

    /// Bitflags' own serde, the reference the hand-written one must match.
    #[derive(Serialize, Deserialize)]
    #[serde(transparent)]
    struct Reference(
        #[serde(
            serialize_with = "bitflags::serde::serialize",
            deserialize_with = "bitflags::serde::deserialize"
        )]
        Permissions,
    );

    #[test]
    fn permissions_text_is_byte_for_byte_bitflags_own_for_every_flag_set() {
        for bits in 0..=u8::MAX {
            let flags = Permissions::from_bits_retain(bits);
            let text = serde_json::to_string(&flags).unwrap();
            assert_eq!(
                text,
                serde_json::to_string(&Reference(flags)).unwrap(),
                "{bits:#x}"
            );
            let back: Permissions = serde_json::from_str(&text).unwrap();
            assert_eq!(back, flags, "{text}");
        }
        assert_eq!(
            serde_json::to_string(&Permissions::empty()).unwrap(),
            r#""""#
        );
        assert_eq!(
            serde_json::to_string(&Permissions::FULL).unwrap(),
            r#""READ | WRITE | UPDATE | DELETE | EXECUTE""#
        );
    }

    #[test]
    fn permissions_read_every_form_bitflags_read_and_refuse_what_it_refused() {
        let forms = [
            "",
            "  ",
            "READ",
            "READ | EXECUTE",
            "READ|EXECUTE",
            " READ |  WRITE ",
            "CRUD",
            "FULL | READ",
            "0x1",
            "READ | 0x20",
            "EXECUTE | READ",
            "READ | READ",
            // Refused, with the same message:
            "READ | | WRITE",
            "READ |",
            "| READ",
            "read",
            "BOGUS",
            "READ | BOGUS",
            "0xzz",
            "READ  | WRITE",
        ];
        for form in forms {
            let json = serde_json::to_string(form).unwrap();
            let ours = serde_json::from_str::<Permissions>(&json).map_err(|e| e.to_string());
            let theirs = serde_json::from_str::<Reference>(&json)
                .map(|r| r.0)
                .map_err(|e| e.to_string());
            assert_eq!(ours, theirs, "{form:?}");
        }
        assert!(serde_json::from_str::<Permissions>(r#""READ | | WRITE""#).is_err());
        assert!(serde_json::from_str::<Permissions>("7").is_err());
    }

    #[test]
    fn permissions_serialize_as_names() {
        let json = serde_json::to_value(Permissions::READ | Permissions::EXECUTE).unwrap();
        assert_eq!(json, serde_json::json!("READ | EXECUTE"));
        let back: Permissions = serde_json::from_value(json).unwrap();
        assert_eq!(back, Permissions::READ | Permissions::EXECUTE);
    }
}
