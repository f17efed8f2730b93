//! Query strings and form bodies: parsed, bounded, and checked field by field, so that a bad one is a `400` that
//! names it.

use std::collections::HashMap;

use super::error::WebError;

/// The most bytes of a query string or a form body.
pub(super) const MAX_FIELDS_BYTES: usize = 16 << 10;
/// The most bytes of one field's value.
pub(super) const MAX_FIELD_BYTES: usize = 4 << 10;

/// `400` naming `field` when `len` bytes are more than [`MAX_FIELDS_BYTES`]: the one bound of a query string or a
/// body the page or a script sends.
pub(super) fn within_limit(field: &'static str, len: usize) -> Result<(), WebError> {
    if len > MAX_FIELDS_BYTES {
        return Err(WebError::bad(
            field,
            format!("{len} bytes, more than the limit of {MAX_FIELDS_BYTES}"),
        ));
    }
    Ok(())
}

/// The fields of a query string or an `application/x-www-form-urlencoded` body.
#[derive(Debug, Default)]
pub(super) struct Fields(HashMap<String, Vec<String>>);

impl Fields {
    /// Parses `text`; too long, or a field too long: `400`.
    pub(super) fn parse(text: Option<&str>) -> Result<Self, WebError> {
        let text = text.unwrap_or("");
        within_limit("query", text.len())?;
        let mut fields: HashMap<String, Vec<String>> = HashMap::new();
        for (name, value) in form_urlencoded::parse(text.as_bytes()) {
            if value.len() > MAX_FIELD_BYTES {
                return Err(WebError::bad(
                    "field",
                    format!(
                        "`{}` is {} bytes, more than the limit of {MAX_FIELD_BYTES}",
                        crate::model::excerpt::excerpt(&name, 40),
                        value.len()
                    ),
                ));
            }
            fields
                .entry(name.into_owned())
                .or_default()
                .push(value.into_owned());
        }
        Ok(Self(fields))
    }

    /// The field's (last) value, if sent and not empty.
    pub(super) fn text(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Every value of the field, in order.
    pub(super) fn all(&self, name: &str) -> &[String] {
        self.0.get(name).map(Vec::as_slice).unwrap_or_default()
    }

    /// A whole number field.
    pub(super) fn number<T: std::str::FromStr>(
        &self,
        name: &'static str,
    ) -> Result<Option<T>, WebError> {
        self.text(name)
            .map(|v| {
                v.parse().map_err(|_| {
                    WebError::bad(
                        name,
                        format!(
                            "`{}` is not a whole number",
                            crate::model::excerpt::excerpt(v, 40)
                        ),
                    )
                })
            })
            .transpose()
    }

    /// A `true`/`false` field.
    pub(super) fn flag(&self, name: &'static str) -> Result<Option<bool>, WebError> {
        match self.text(name) {
            None => Ok(None),
            Some("true" | "1" | "on") => Ok(Some(true)),
            Some("false" | "0" | "off") => Ok(Some(false)),
            Some(v) => Err(WebError::bad(
                name,
                format!(
                    "`{}`: expected true or false",
                    crate::model::excerpt::excerpt(v, 40)
                ),
            )),
        }
    }
}
