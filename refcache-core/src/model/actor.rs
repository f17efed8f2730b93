//! Actors: who makes a call or a poll. Access policies grant permissions to actors, namespace templates are filled
//! from them.
//!
//! An actor is a user, an agent or the system, each with an optional id, an optional session id and free-form
//! attributes (such as a tenant). The actor in effect is ambient, like the [`Session`](crate::Session): an MCP server
//! sets it per request (#5); Rust code scopes it with [`Actor::scope`]. With no scope, calls and polls are made by an
//! anonymous user: the application itself.
//!
//! Both `current`s live here, [`Actor::current`] and [`Session::current`]: each reads the other's scope, and
//! `session.rs` stays below this file.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::model::scope::{ScopeGuard, any_scope, marked};
use crate::model::session::Session;

/// What kind of actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActorKind {
    /// A person, or the application acting for one.
    User,
    /// An AI agent calling tools.
    Agent,
    /// The service itself: may do everything.
    System,
}

impl ActorKind {
    /// `user`, `agent` or `system`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Agent => "agent",
            Self::System => "system",
        }
    }
}

/// Who makes a call or a poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Actor {
    /// User, agent or system.
    pub kind: ActorKind,
    /// Its id, when known (`alice`, `claude-1`).
    pub id: Option<String>,
    /// The session it acts in, when there is one.
    pub session_id: Option<String>,
    /// Further facts about it, usable in namespace templates (`{tenant}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

tokio::task_local! {
    static ACTOR: Actor;
}

thread_local! {
    static SYNC_ACTOR: RefCell<Option<Actor>> = const { RefCell::new(None) };
}

impl Actor {
    fn of(kind: ActorKind, id: Option<String>) -> Self {
        Self {
            kind,
            id,
            session_id: None,
            attributes: BTreeMap::new(),
        }
    }

    /// The user `id`.
    pub fn user(id: impl Into<String>) -> Self {
        Self::of(ActorKind::User, Some(id.into()))
    }

    /// A user without an id: what calls and polls outside any [`Actor::scope`] are made by.
    pub fn anonymous_user() -> Self {
        Self::of(ActorKind::User, None)
    }

    /// The agent `id`.
    pub fn agent(id: impl Into<String>) -> Self {
        Self::of(ActorKind::Agent, Some(id.into()))
    }

    /// An agent without an id.
    pub fn anonymous_agent() -> Self {
        Self::of(ActorKind::Agent, None)
    }

    /// The system: every check passes.
    pub fn system() -> Self {
        Self::of(ActorKind::System, None)
    }

    /// The same actor, in session `id`.
    pub fn with_session(mut self, id: impl Into<String>) -> Self {
        self.session_id = Some(id.into());
        self
    }

    /// The same actor with attribute `name` set to `value` (for namespace templates such as `shared:{team}`).
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// Whether this is the system actor.
    pub fn is_system(&self) -> bool {
        self.kind == ActorKind::System
    }

    /// A namespace-template variable: `session_id`, `user_id` (of a user), `agent_id` (of an agent), `actor_id`
    /// (of either), or an attribute. The four built-in names never come from attributes: an agent with an attribute
    /// `user_id` still has no user id.
    pub fn var(&self, name: &str) -> Option<&str> {
        match name {
            "session_id" => self.session_id.as_deref(),
            "user_id" => self.id.as_deref().filter(|_| self.kind == ActorKind::User),
            "agent_id" => self.id.as_deref().filter(|_| self.kind == ActorKind::Agent),
            "actor_id" => self.id.as_deref(),
            other => self.attributes.get(other).map(String::as_str),
        }
    }

    /// The text actor patterns match against: `user:alice`, `agent:claude-1`, `user:` for an anonymous user,
    /// `system:` for the system.
    pub fn pattern_name(&self) -> String {
        format!(
            "{}:{}",
            self.kind.as_str(),
            self.id.as_deref().unwrap_or("")
        )
    }

    /// The actor an authenticated principal acts as, on every surface that serves it (MCP requests, the web
    /// page): its id and attributes as `kind` (a system principal stays the system), in the session
    /// `mcp:<kind>:<id>` of the principal as the auth layer named it (`mcp:user:alice`). One principal is so one
    /// owner everywhere: its tasks are bound to that session (`#[cached]` keys, polls, lists), and a call made
    /// from the page and one made over MCP with the same arguments are one execution.
    pub fn as_principal(&self, kind: ActorKind) -> Actor {
        let session = format!("mcp:{}", self.pattern_name());
        let mut actor = self.clone();
        if !actor.is_system() {
            actor.kind = kind;
        }
        actor.with_session(session)
    }

    /// Runs `fut` as this actor: every `#[cached]` call, poll and admin operation inside it is made by it.
    /// Task-local: it follows `fut` across threads and does not leak to other tasks.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        let _active = ScopeGuard::enter();
        ACTOR.scope(self, marked(fut)).await
    }

    /// The synchronous twin of [`scope`](Self::scope), for this thread.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        struct Restore(Option<Actor>);
        impl Drop for Restore {
            fn drop(&mut self) {
                SYNC_ACTOR.with(|cell| *cell.borrow_mut() = self.0.take());
            }
        }
        let _active = ScopeGuard::enter_sync();
        let _restore = Restore(SYNC_ACTOR.with(|cell| cell.borrow_mut().replace(self)));
        f()
    }

    /// The actor scoped here, if any (without the session of a [`Session`] scope).
    pub(crate) fn scoped() -> Option<Actor> {
        if !any_scope() {
            return None;
        }
        ACTOR
            .try_with(Clone::clone)
            .ok()
            .or_else(|| SYNC_ACTOR.with(|cell| cell.borrow().clone()))
    }

    /// The actor in effect: the scoped one (an anonymous user if none), in the session in effect.
    pub fn current() -> Actor {
        if !any_scope() {
            return Self::anonymous_user();
        }
        let mut actor = Self::scoped().unwrap_or_else(Self::anonymous_user);
        if let Some(session) = Session::current() {
            actor.session_id = Some(session.id().to_owned());
        }
        actor
    }
}

impl Session {
    /// The session in effect, if any: the innermost `Session` scope's, else the scoped [`Actor`](crate::Actor)'s.
    ///
    /// (Defined here, beside [`Actor::current`], because it reads the scoped actor: `session.rs` stays below
    /// `actor.rs`.)
    pub fn current() -> Option<Session> {
        if !any_scope() {
            return None;
        }
        Session::scoped().or_else(|| {
            Actor::scoped()
                .and_then(|actor| actor.session_id)
                .map(Session::from)
        })
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{}:{id}", self.kind.as_str()),
            None => f.write_str(self.kind.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_variables_follow_the_kind() {
        let user = Actor::user("alice")
            .with_session("s1")
            .with_attribute("team", "blue");
        assert_eq!(user.var("user_id"), Some("alice"));
        assert_eq!(user.var("agent_id"), None, "a user has no agent id");
        assert_eq!(user.var("actor_id"), Some("alice"));
        assert_eq!(user.var("session_id"), Some("s1"));
        assert_eq!(user.var("team"), Some("blue"));
        assert_eq!(user.var("tenant"), None);
        let posing = Actor::agent("a").with_attribute("user_id", "alice");
        assert_eq!(
            posing.var("user_id"),
            None,
            "built-in names never come from attributes"
        );
        let agent = Actor::agent("claude");
        assert_eq!(agent.var("agent_id"), Some("claude"));
        assert_eq!(agent.var("user_id"), None);
        assert_eq!(agent.pattern_name(), "agent:claude");
        assert_eq!(Actor::anonymous_user().pattern_name(), "user:");
        assert_eq!(Actor::system().to_string(), "system");
    }

    #[tokio::test]
    async fn the_scoped_actor_takes_the_scoped_session() {
        assert_eq!(Actor::current(), Actor::anonymous_user());
        let seen = Actor::agent("a")
            .scope(Session::new("s").scope(async { Actor::current() }))
            .await;
        assert_eq!(seen, Actor::agent("a").with_session("s"));
        let own = Actor::agent("a")
            .with_session("t")
            .scope(async { (Actor::current(), Session::current()) })
            .await;
        assert_eq!(own.0.session_id.as_deref(), Some("t"));
        assert_eq!(
            own.1,
            Some(Session::new("t")),
            "the actor's session is the session"
        );
        let sync = Actor::user("u").sync_scope(Actor::current);
        assert_eq!(sync, Actor::user("u"));
        assert_eq!(Actor::current(), Actor::anonymous_user(), "restored");
    }
}
