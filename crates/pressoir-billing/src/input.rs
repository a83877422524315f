//! Reading Lago request bodies: the root key, and typed fields whose problems are collected
//! as Lago field errors. An explicit `null` is read as absent.

use crate::proto::{ApiError, FieldErrors};
use rust_decimal::Decimal;
use serde_json::{Map, Value};
use std::str::FromStr;

/// Parses a body as JSON, answering 400 on malformed input.
pub fn parse_body(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(bytes).map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))
}

/// The object under `root`, or 400 as Rails answers a missing parameter.
pub fn root<'a>(body: &'a Value, root: &str) -> Result<&'a Map<String, Value>, ApiError> {
    match body.get(root) {
        Some(Value::Object(m)) if !m.is_empty() => Ok(m),
        _ => Err(ApiError::BadRequest(format!(
            "param is missing or the value is empty: {root}"
        ))),
    }
}

/// Typed access to one object's fields, collecting errors.
pub struct Fields<'a> {
    pub map: &'a Map<String, Value>,
    pub errors: FieldErrors,
    prefix: String,
}

impl<'a> Fields<'a> {
    pub fn new(map: &'a Map<String, Value>) -> Self {
        Fields {
            map,
            errors: FieldErrors::default(),
            prefix: String::new(),
        }
    }

    pub fn nested(map: &'a Map<String, Value>, prefix: &str) -> Self {
        Fields {
            map,
            errors: FieldErrors::default(),
            prefix: format!("{prefix}."),
        }
    }

    fn name(&self, k: &str) -> String {
        format!("{}{k}", self.prefix)
    }

    pub fn err(&mut self, k: &str, code: &str) {
        let n = self.name(k);
        self.errors.add(&n, code);
    }

    /// Present and not null.
    pub fn get(&self, k: &str) -> Option<&'a Value> {
        match self.map.get(k) {
            None | Some(Value::Null) => None,
            Some(v) => Some(v),
        }
    }

    pub fn has(&self, k: &str) -> bool {
        self.get(k).is_some()
    }

    pub fn str(&mut self, k: &str) -> Option<String> {
        match self.get(k)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => {
                self.err(k, "value_is_invalid");
                None
            }
        }
    }

    pub fn req_str(&mut self, k: &str) -> Option<String> {
        match self.str(k) {
            Some(s) if !s.trim().is_empty() => Some(s),
            Some(_) | None => {
                if !self.errors.0.contains_key(&self.name(k)) {
                    self.err(k, "value_is_mandatory");
                }
                None
            }
        }
    }

    pub fn one_of(&mut self, k: &str, allowed: &[&str]) -> Option<String> {
        let s = self.str(k)?;
        if allowed.contains(&s.as_str()) {
            Some(s)
        } else {
            self.err(k, "value_is_invalid");
            None
        }
    }

    pub fn bool(&mut self, k: &str) -> Option<bool> {
        match self.get(k)? {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s == "true" => Some(true),
            Value::String(s) if s == "false" => Some(false),
            _ => {
                self.err(k, "value_is_invalid");
                None
            }
        }
    }

    pub fn int(&mut self, k: &str) -> Option<i64> {
        match self.get(k)? {
            Value::Number(n) if n.is_i64() => n.as_i64(),
            Value::String(s) if s.parse::<i64>().is_ok() => s.parse().ok(),
            _ => {
                self.err(k, "value_is_invalid");
                None
            }
        }
    }

    pub fn non_negative_int(&mut self, k: &str) -> Option<i64> {
        let v = self.int(k)?;
        if v < 0 {
            self.err(k, "value_is_out_of_range");
            return None;
        }
        Some(v)
    }

    pub fn decimal(&mut self, k: &str) -> Option<Decimal> {
        let v = self.get(k)?;
        match decimal_of(v) {
            Some(d) => Some(d),
            None => {
                self.err(k, "value_is_invalid");
                None
            }
        }
    }

    pub fn object(&mut self, k: &str) -> Option<&'a Map<String, Value>> {
        match self.get(k)? {
            Value::Object(m) => Some(m),
            _ => {
                self.err(k, "value_is_invalid");
                None
            }
        }
    }

    pub fn array(&mut self, k: &str) -> Option<&'a Vec<Value>> {
        match self.get(k)? {
            Value::Array(a) => Some(a),
            _ => {
                self.err(k, "value_is_invalid");
                None
            }
        }
    }

    pub fn absorb(&mut self, other: FieldErrors) {
        for (k, v) in other.0 {
            for c in v {
                self.errors.add(&k, &c);
            }
        }
    }

    pub fn finish(self) -> Result<(), ApiError> {
        self.errors.into_result()
    }
}

/// A JSON number or numeric string as an exact decimal (numbers are read from their text,
/// never through a float).
pub fn decimal_of(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => parse_decimal(&n.to_string()),
        Value::String(s) => parse_decimal(s.trim()),
        _ => None,
    }
}

pub fn parse_decimal(s: &str) -> Option<Decimal> {
    if s.is_empty() {
        return None;
    }
    Decimal::from_str(s)
        .or_else(|_| Decimal::from_scientific(s))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nulls_are_absent_and_errors_collect() {
        let v = json!({"a": null, "b": "x", "n": "12", "d": 0.1});
        let m = v.as_object().unwrap();
        let mut f = Fields::new(m);
        assert_eq!(f.str("a"), None);
        assert_eq!(f.req_str("a"), None);
        assert_eq!(f.int("n"), Some(12));
        assert_eq!(f.decimal("d"), Some(Decimal::new(1, 1)));
        assert_eq!(f.int("b"), None);
        assert_eq!(f.errors.0["a"], vec!["value_is_mandatory"]);
        assert_eq!(f.errors.0["b"], vec!["value_is_invalid"]);
    }

    #[test]
    fn malformed_json_is_400() {
        assert!(matches!(parse_body(b"{nope"), Err(ApiError::BadRequest(_))));
    }
}
