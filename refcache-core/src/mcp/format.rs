//! The `_async_response_format` argument every cached tool (and `get_cached_result`) accepts.

use rmcp::handler::server::common::FromContextPart;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::model::JsonObject;
use serde_json::Value;

use crate::model::error::RefCacheError;
use crate::model::format::AsyncResponseFormat;

/// The name of the extra argument.
pub const FORMAT_ARGUMENT: &str = "_async_response_format";

/// A tool call's `_async_response_format` argument (`minimal`, `standard` or `full`), taken out of the arguments
/// before the tool's own parameters are deserialized, so a parameter type with `deny_unknown_fields` still
/// accepts it, and the tool's input schema stays the parameter type's.
///
/// As an rmcp extractor it must come before `Parameters<T>` in a tool's signature; `#[cached]` puts it first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FormatOverride(Option<Result<AsyncResponseFormat, String>>);

impl FormatOverride {
    /// Takes the argument out of `arguments`.
    pub fn take(arguments: &mut Option<JsonObject>) -> Self {
        let Some(value) = arguments.as_mut().and_then(|a| a.remove(FORMAT_ARGUMENT)) else {
            return Self(None);
        };
        Self(Some(match &value {
            Value::String(text) => text.parse().map_err(|_| text.clone()),
            Value::Null => return Self(None),
            other => Err(other.to_string()),
        }))
    }

    /// The format asked for, if any; an invalid value is an [`RefCacheError::InvalidOption`] naming the valid ones.
    pub fn get(&self) -> Result<Option<AsyncResponseFormat>, RefCacheError> {
        match &self.0 {
            None => Ok(None),
            Some(Ok(format)) => Ok(Some(*format)),
            Some(Err(value)) => Err(RefCacheError::InvalidOption {
                option: FORMAT_ARGUMENT,
                value: value.chars().take(100).collect(),
                expected: "`minimal`, `standard` or `full`",
            }),
        }
    }
}

impl<S> FromContextPart<ToolCallContext<'_, S>> for FormatOverride {
    fn from_context_part(context: &mut ToolCallContext<'_, S>) -> Result<Self, rmcp::ErrorData> {
        Ok(Self::take(&mut context.arguments))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn take(args: Value) -> (FormatOverride, Value) {
        let mut args = args.as_object().cloned();
        let format = FormatOverride::take(&mut args);
        (format, Value::Object(args.unwrap_or_default()))
    }

    #[test]
    fn is_stripped_and_validated() {
        let (format, rest) = take(json!({"n": 1, "_async_response_format": "full"}));
        assert_eq!(format.get().unwrap(), Some(AsyncResponseFormat::Full));
        assert_eq!(rest, json!({"n": 1}));
        let (format, rest) = take(json!({"n": 1}));
        assert_eq!(format.get().unwrap(), None);
        assert_eq!(rest, json!({"n": 1}));
        let (format, rest) = take(json!({"_async_response_format": "verbose"}));
        let error = format.get().unwrap_err().to_string();
        assert!(
            error.contains("verbose") && error.contains("`minimal`, `standard` or `full`"),
            "{error}"
        );
        assert_eq!(rest, json!({}));
        let (format, _) = take(json!({"_async_response_format": 3}));
        assert!(format.get().is_err());
    }
}
