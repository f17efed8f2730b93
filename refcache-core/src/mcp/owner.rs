//! Who owns a task made through MCP, read from the request.

use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::service::RequestContext;

use crate::model::actor::{Actor, ActorKind};

/// Who owns the tasks a request makes: every tool call, poll, cancel, retry, list and `tasks/*` request is made
/// as this owner's [`Actor`], so one owner never sees another's tasks.
///
/// Read from the request, in this order ([`Owner::of`]):
/// 1. **the authenticated principal**: an [`Actor`] with an id that the server's auth layer put into the HTTP
///    request's extensions (`request.extensions_mut().insert(Actor::user("alice"))`). Its kind and id name the
///    owner, so the id must be unique across the server (put a tenant into the id, not only into an attribute);
/// 2. else **the MCP session** (the `Mcp-Session-Id` header the server issued), for clients on a protocol before
///    2026-07-28; a 2026-07-28 request (protocol version in its `_meta`) is stateless, and its header is ignored;
/// 3. else **the connection**, when the request came over no HTTP at all (stdio, or any in-process transport):
///    one connection serves one client;
/// 4. else nobody: [`Owner::Anonymous`], stateless HTTP without auth. Then the 128-bit random ref id is the
///    capability, and `list_tasks` refuses, since it cannot tell whose tasks are whose.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Owner {
    /// The principal an auth layer authenticated.
    Principal(Actor),
    /// A legacy MCP session.
    Session(String),
    /// A connection (stdio): the id of the [`McpRefCache`](super::server::McpRefCache) serving it.
    Connection(Arc<str>),
    /// Nobody identifiable.
    Anonymous,
}

/// The HTTP header of legacy MCP sessions.
const SESSION_HEADER: &str = "mcp-session-id";

impl Owner {
    /// The owner of `request`, served over connection `connection` when it came over no HTTP.
    pub fn of(request: &RequestContext<RoleServer>, connection: &Arc<str>) -> Self {
        let Some(parts) = request.extensions.get::<http::request::Parts>() else {
            return Self::Connection(connection.clone());
        };
        if let Some(actor) = parts.extensions.get::<Actor>() {
            // A principal without an id cannot be told apart from other such principals.
            return match actor.id {
                Some(_) => Self::Principal(actor.clone()),
                None => Self::Anonymous,
            };
        }
        // A 2026-07-28 request carries its protocol version in `_meta` and is served statelessly: a session header
        // on it was never issued or checked by the server, so it identifies nobody.
        if request.meta.protocol_version().is_some() {
            return Self::Anonymous;
        }
        match parts
            .headers
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            Some(session) if !session.is_empty() => Self::Session(session.to_owned()),
            _ => Self::Anonymous,
        }
    }

    /// The actor requests of this owner act as, callers being of `kind` (agents, by default: see
    /// [`McpRefCache::with_caller_kind`](super::server::McpRefCache::with_caller_kind)). Each identified owner acts in a
    /// session of its own, so its tasks are bound to it (`#[cached]` keys, polls, lists) and invisible to every
    /// other owner.
    ///
    /// - a principal: its id and attributes as `kind` (a system principal stays the system), in session
    ///   `mcp:<kind>:<id>` of the principal as the auth layer named it (`mcp:user:alice`);
    /// - a session: an anonymous `kind` in session `mcp-session:<id>`;
    /// - a connection: an anonymous `kind` in session `mcp-connection:<id>`;
    /// - nobody: an anonymous `kind` outside any session.
    pub fn actor(&self, kind: ActorKind) -> Actor {
        let anonymous = || {
            let mut actor = Actor::anonymous_user();
            actor.kind = kind;
            actor
        };
        match self {
            Self::Principal(principal) => principal.as_principal(kind),
            Self::Session(id) => anonymous().with_session(format!("mcp-session:{id}")),
            Self::Connection(id) => anonymous().with_session(format!("mcp-connection:{id}")),
            Self::Anonymous => anonymous(),
        }
    }

    /// Whether this owner can be told apart from others (everything but [`Owner::Anonymous`]).
    pub fn is_identified(&self) -> bool {
        !matches!(self, Self::Anonymous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_owner_acts_in_a_session_of_its_own() {
        let alice = Owner::Principal(Actor::user("alice")).actor(ActorKind::Agent);
        assert_eq!(alice.session_id.as_deref(), Some("mcp:user:alice"));
        assert_eq!(
            (alice.kind, alice.id.as_deref()),
            (ActorKind::Agent, Some("alice"))
        );
        let as_user = Owner::Principal(Actor::user("alice")).actor(ActorKind::User);
        assert_eq!(as_user.kind, ActorKind::User);
        let system =
            Owner::Principal(Actor::system().with_attribute("id", "ops")).actor(ActorKind::Agent);
        assert!(system.is_system(), "a system principal keeps its rights");
        let session = Owner::Session("s-1".into()).actor(ActorKind::Agent);
        assert_eq!(session.session_id.as_deref(), Some("mcp-session:s-1"));
        assert_eq!(session.kind, ActorKind::Agent);
        let connection = Owner::Connection("c-1".into()).actor(ActorKind::Agent);
        assert_eq!(connection.session_id.as_deref(), Some("mcp-connection:c-1"));
        assert_eq!(Owner::Anonymous.actor(ActorKind::Agent).session_id, None);
        assert!(!Owner::Anonymous.is_identified());
    }
}
