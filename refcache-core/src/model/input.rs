//! Input requests: the question a running task asks its caller ([`InputRequest`]), the schema its answer must fit
//! ([`InputSchema`]), and why an ask or an answer is refused ([`InputSchemaError`], [`InputAnswerError`]).
//!
//! The schema is the one an MCP form elicitation can carry (`requestedSchema`): an object whose properties are
//! strings, numbers, integers, booleans or string enums, with `required`, `minLength`/`maxLength`,
//! `minimum`/`maximum`, `title`, `description` and `default`. A schema is compiled when the task asks, so a schema
//! that does not fit fails the ask, never the answer; every reader of the record (any replica) compiles it again
//! from the record to check an answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::model::task::Timestamp;

/// A question a task asks while it runs: its record shows it while the status is `input_required`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InputRequest {
    /// This question's key, unique over the task's life (`input-1`, `input-2`, ...): an answer names it on MCP.
    pub key: String,
    /// What the task asks, shown to whoever answers.
    pub message: String,
    /// The JSON schema the answer must fit (see [`InputSchema`]).
    pub schema: Value,
    /// When the task stops waiting and fails with "no input came" (`None`: it waits as long as it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    /// Who may answer: the actor whose call started the task, as its pattern name (`user:alice`). `None`: an
    /// anonymous call started it, and whoever may execute the reference may answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl InputRequest {
    /// A question `key` with `message`, whose answer must fit `schema`.
    pub fn new(
        key: impl Into<String>,
        message: impl Into<String>,
        schema: Value,
        deadline: Option<Timestamp>,
    ) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
            schema,
            deadline,
            owner: None,
        }
    }

    /// The same question, answerable only by `owner` (an actor's pattern name, `user:alice`).
    pub fn with_owner(mut self, owner: Option<String>) -> Self {
        self.owner = owner;
        self
    }

    /// Checks `answer` against this question's schema.
    pub fn check(&self, answer: &Value) -> Result<(), InputAnswerError> {
        let schema = InputSchema::compile(&self.schema).map_err(|e| InputAnswerError {
            field: String::new(),
            reason: format!("the question's schema no longer compiles: {e}"),
        })?;
        schema.check(answer)
    }
}

/// A schema that does not compile: the `ask` fails with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input schema at `{at}`: {reason}")]
#[non_exhaustive]
pub struct InputSchemaError {
    /// Where in the schema, as a JSON pointer (`/properties/count/minimum`; empty for the root).
    pub at: String,
    /// What is wrong and what to write instead.
    pub reason: String,
}

/// An answer that does not fit the question's schema. The task keeps waiting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("answer field `{field}`: {reason}")]
#[non_exhaustive]
pub struct InputAnswerError {
    /// The field of the answer at fault (empty: the answer as a whole).
    pub field: String,
    /// What is wrong with it. It names no value the caller sent beyond its type.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    String {
        min: Option<u64>,
        max: Option<u64>,
        choices: Option<Vec<String>>,
    },
    Number {
        integer: bool,
        min: Option<f64>,
        max: Option<f64>,
    },
    Boolean,
}

/// A compiled input schema: what an answer is checked against.
///
/// ```
/// use refcache_core::InputSchema;
/// let schema = InputSchema::compile(&serde_json::json!({
///     "type": "object",
///     "properties": {"confirm": {"type": "boolean"}},
///     "required": ["confirm"],
/// }))?;
/// assert!(schema.check(&serde_json::json!({"confirm": true})).is_ok());
/// let err = schema.check(&serde_json::json!({"confirm": "yes"})).unwrap_err();
/// assert_eq!(err.field, "confirm");
/// # Ok::<(), refcache_core::InputSchemaError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct InputSchema {
    properties: BTreeMap<String, Kind>,
    required: Vec<String>,
}

const OBJECT_KEYS: &[&str] = &[
    "type",
    "properties",
    "required",
    "title",
    "description",
    "$schema",
];

fn bad(at: impl Into<String>, reason: impl Into<String>) -> InputSchemaError {
    InputSchemaError {
        at: at.into(),
        reason: reason.into(),
    }
}

fn count(v: &Value, at: &str) -> Result<u64, InputSchemaError> {
    v.as_u64()
        .ok_or_else(|| bad(at, "must be a non-negative integer"))
}

fn number(v: &Value, at: &str) -> Result<f64, InputSchemaError> {
    v.as_f64().ok_or_else(|| bad(at, "must be a number"))
}

impl InputSchema {
    /// Compiles `schema`, or says where it does not fit what an MCP form can carry.
    pub fn compile(schema: &Value) -> Result<Self, InputSchemaError> {
        let root = schema.as_object().ok_or_else(|| {
            bad(
                "",
                "must be a JSON object such as {\"type\":\"object\",\"properties\":{...}}",
            )
        })?;
        for key in root.keys() {
            if !OBJECT_KEYS.contains(&key.as_str()) {
                return Err(bad(
                    format!("/{key}"),
                    format!(
                        "keyword `{key}` is not supported: an input schema may use only {}",
                        OBJECT_KEYS.join(", ")
                    ),
                ));
            }
        }
        if root.get("type") != Some(&Value::from("object")) {
            return Err(bad("/type", "must be \"object\""));
        }
        let mut properties = BTreeMap::new();
        if let Some(props) = root.get("properties") {
            let props = props
                .as_object()
                .ok_or_else(|| bad("/properties", "must be an object of property schemas"))?;
            for (name, prop) in props {
                properties.insert(name.clone(), Self::property(name, prop)?);
            }
        }
        let mut required = Vec::new();
        if let Some(list) = root.get("required") {
            let list = list
                .as_array()
                .ok_or_else(|| bad("/required", "must be an array of property names"))?;
            for (i, name) in list.iter().enumerate() {
                let name = name
                    .as_str()
                    .ok_or_else(|| bad(format!("/required/{i}"), "must be a property name"))?;
                if !properties.contains_key(name) {
                    return Err(bad(
                        format!("/required/{i}"),
                        format!("names `{name}`, which is not in `properties`"),
                    ));
                }
                required.push(name.to_owned());
            }
        }
        Ok(Self {
            properties,
            required,
        })
    }

    fn property(name: &str, prop: &Value) -> Result<Kind, InputSchemaError> {
        let at = format!("/properties/{name}");
        let prop = prop
            .as_object()
            .ok_or_else(|| bad(&at, "must be an object such as {\"type\":\"string\"}"))?;
        let ty = prop.get("type").and_then(Value::as_str).ok_or_else(|| {
            bad(
                format!("{at}/type"),
                "must be one of \"string\", \"number\", \"integer\", \"boolean\"",
            )
        })?;
        let allowed: &[&str] = match ty {
            "string" => &["minLength", "maxLength", "enum", "format"],
            "number" | "integer" => &["minimum", "maximum"],
            "boolean" => &[],
            other => {
                return Err(bad(
                    format!("{at}/type"),
                    format!(
                        "type `{other}` is not supported: use \"string\", \"number\", \"integer\" or \"boolean\" (an MCP form carries only flat fields)"
                    ),
                ));
            }
        };
        for key in prop.keys() {
            let common = matches!(key.as_str(), "type" | "title" | "description" | "default");
            if !common && !allowed.contains(&key.as_str()) {
                return Err(bad(
                    format!("{at}/{key}"),
                    format!(
                        "keyword `{key}` is not supported on a {ty} field: an MCP form could not show it"
                    ),
                ));
            }
        }
        let get = |k: &str| prop.get(k).map(|v| (v, format!("{at}/{k}")));
        Ok(match ty {
            "string" => {
                if let Some((v, p)) = get("format") {
                    match v.as_str() {
                        Some("email" | "uri" | "date" | "date-time") => {}
                        _ => {
                            return Err(bad(
                                p,
                                "must be one of \"email\", \"uri\", \"date\", \"date-time\"",
                            ));
                        }
                    }
                }
                let choices = match get("enum") {
                    Some((v, p)) => {
                        let list = v
                            .as_array()
                            .filter(|l| !l.is_empty())
                            .ok_or_else(|| bad(&p, "must be a non-empty array of strings"))?;
                        Some(
                            list.iter()
                                .map(|c| {
                                    c.as_str()
                                        .map(str::to_owned)
                                        .ok_or_else(|| bad(&p, "must hold only strings"))
                                })
                                .collect::<Result<Vec<_>, _>>()?,
                        )
                    }
                    None => None,
                };
                Kind::String {
                    min: get("minLength").map(|(v, p)| count(v, &p)).transpose()?,
                    max: get("maxLength").map(|(v, p)| count(v, &p)).transpose()?,
                    choices,
                }
            }
            "boolean" => Kind::Boolean,
            _ => Kind::Number {
                integer: ty == "integer",
                min: get("minimum").map(|(v, p)| number(v, &p)).transpose()?,
                max: get("maximum").map(|(v, p)| number(v, &p)).transpose()?,
            },
        })
    }

    /// Checks `answer`: an object with every required field, each field of its type and within its bounds, and no
    /// field the schema does not name.
    pub fn check(&self, answer: &Value) -> Result<(), InputAnswerError> {
        let fail = |field: &str, reason: String| InputAnswerError {
            field: field.to_owned(),
            reason,
        };
        let object: &Map<String, Value> = answer.as_object().ok_or_else(|| {
            fail(
                "",
                format!("must be a JSON object, got {}", type_name(answer)),
            )
        })?;
        for name in &self.required {
            if !object.contains_key(name) {
                return Err(fail(name, "is required".to_owned()));
            }
        }
        for (name, value) in object {
            let Some(kind) = self.properties.get(name) else {
                let known: Vec<&str> = self.properties.keys().map(String::as_str).collect();
                return Err(fail(
                    name,
                    format!("is not asked for (the fields are: {})", known.join(", ")),
                ));
            };
            match kind {
                Kind::Boolean => {
                    if !value.is_boolean() {
                        return Err(fail(
                            name,
                            format!("must be a boolean, got {}", type_name(value)),
                        ));
                    }
                }
                Kind::String { min, max, choices } => {
                    let Some(text) = value.as_str() else {
                        return Err(fail(
                            name,
                            format!("must be a string, got {}", type_name(value)),
                        ));
                    };
                    let len = text.chars().count() as u64;
                    if min.is_some_and(|m| len < m) || max.is_some_and(|m| len > m) {
                        return Err(fail(
                            name,
                            format!(
                                "must be {} to {} characters long, got {len}",
                                min.unwrap_or(0),
                                max.map_or("any".to_owned(), |m| m.to_string())
                            ),
                        ));
                    }
                    if let Some(choices) = choices
                        && !choices.iter().any(|c| c == text)
                    {
                        return Err(fail(
                            name,
                            format!("must be one of: {}", choices.join(", ")),
                        ));
                    }
                }
                Kind::Number { integer, min, max } => {
                    let Some(n) = value.as_f64() else {
                        return Err(fail(
                            name,
                            format!("must be a number, got {}", type_name(value)),
                        ));
                    };
                    if *integer && !(value.is_i64() || value.is_u64()) {
                        return Err(fail(name, "must be an integer".to_owned()));
                    }
                    if min.is_some_and(|m| n < m) {
                        return Err(fail(
                            name,
                            format!("must be at least {}", min.unwrap_or_default()),
                        ));
                    }
                    if max.is_some_and(|m| n > m) {
                        return Err(fail(
                            name,
                            format!("must be at most {}", max.unwrap_or_default()),
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> InputSchema {
        InputSchema::compile(&json!({
            "type": "object",
            "properties": {
                "confirm": {"type": "boolean"},
                "count": {"type": "integer", "minimum": 1, "maximum": 10},
                "pick": {"type": "string", "enum": ["a", "b"]},
                "note": {"type": "string", "maxLength": 3}
            },
            "required": ["confirm"]
        }))
        .unwrap()
    }

    #[test]
    fn answers_that_fit_pass() {
        let s = schema();
        s.check(&json!({"confirm": true})).unwrap();
        s.check(&json!({"confirm": false, "count": 10, "pick": "b", "note": "abc"}))
            .unwrap();
    }

    #[test]
    fn a_bad_answer_names_its_field() {
        let s = schema();
        let cases = [
            (json!({}), "confirm", "required"),
            (json!({"confirm": "yes"}), "confirm", "boolean"),
            (json!({"confirm": true, "count": 0}), "count", "at least 1"),
            (json!({"confirm": true, "count": 1.5}), "count", "integer"),
            (
                json!({"confirm": true, "pick": "c"}),
                "pick",
                "one of: a, b",
            ),
            (
                json!({"confirm": true, "note": "abcd"}),
                "note",
                "characters",
            ),
            (
                json!({"confirm": true, "extra": 1}),
                "extra",
                "not asked for",
            ),
            (json!([true]), "", "JSON object"),
        ];
        for (answer, field, text) in cases {
            let err = s.check(&answer).unwrap_err();
            assert_eq!(err.field, field, "{answer}");
            assert!(err.to_string().contains(text), "{answer}: {err}");
        }
    }

    #[test]
    fn a_schema_that_does_not_fit_fails_to_compile_naming_where() {
        let cases = [
            (json!("x"), ""),
            (json!({"type": "objekt"}), "/type"),
            (
                json!({"type": "object", "additionalProperties": false}),
                "/additionalProperties",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "object"}}}),
                "/properties/a/type",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "^x"}}}),
                "/properties/a/pattern",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "integer", "minimum": "x"}}}),
                "/properties/a/minimum",
            ),
            (
                json!({"type": "object", "properties": {}, "required": ["a"]}),
                "/required/0",
            ),
        ];
        for (schema, at) in cases {
            let err = InputSchema::compile(&schema).unwrap_err();
            assert_eq!(err.at, at, "{schema}: {err}");
        }
    }
}
