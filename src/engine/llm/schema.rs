//! Checking a reply against the JSON Schema its request asked for.
//!
//! Servers honour `response_format` to different degrees (a small local
//! model may ignore it), so nothing is stored before the reply is checked
//! here. The subset is what reply schemas use: `type` (one or a list),
//! `properties`, `required`, `additionalProperties: false`, `items`, `enum`,
//! `minLength` / `maxLength` (characters), `minimum` / `maximum`, and
//! `minItems` / `maxItems`. `check_schema` refuses, when a prompt is
//! stored, any other keyword that would constrain a reply (a `pattern`
//! or `oneOf` would otherwise be ignored and replies it forbids would
//! pass) and any keyword whose value has the wrong shape (`"required":
//! "x"`); annotations (`title`, `description`, `format`, ...) are allowed.

use serde_json::Value;

/// Ok, or what is wrong and where (`$.instruction: ...`).
pub fn validate(schema: &Value, value: &Value) -> Result<(), String> {
    check(schema, value, "$")
}

/// Keywords `validate` enforces.
const CHECKED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "minItems",
    "maxItems",
];

/// Keywords that say something about a value without constraining it.
const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "format",
    "deprecated",
    "readOnly",
    "writeOnly",
];

const TYPES: &[&str] = &["null", "boolean", "integer", "number", "string", "array", "object"];

/// Ok when `validate` enforces everything `schema` says; otherwise what is
/// wrong and where (`$.properties.score.minimum: ...`).
pub fn check_schema(schema: &Value) -> Result<(), String> {
    match schema {
        Value::Object(_) => check_subschema(schema, "$"),
        _ => Err("$: a reply schema is a JSON object".into()),
    }
}

fn check_subschema(schema: &Value, path: &str) -> Result<(), String> {
    let fields = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(fields) => fields,
        other => return Err(format!("{path}: a schema is an object or a boolean, not {other}")),
    };
    for (keyword, value) in fields {
        let at = format!("{path}.{keyword}");
        if ANNOTATIONS.contains(&keyword.as_str()) {
            continue;
        }
        if !CHECKED.contains(&keyword.as_str()) {
            return Err(format!(
                "{at}: inf_ir does not check replies against \"{keyword}\"; it checks {}",
                CHECKED.join(", ")
            ));
        }
        match keyword.as_str() {
            "type" => {
                let names: Vec<&Value> = match value {
                    Value::Array(names) if !names.is_empty() => names.iter().collect(),
                    Value::Array(_) => return Err(format!("{at}: an empty list of types allows nothing")),
                    one => vec![one],
                };
                for name in names {
                    if !name.as_str().is_some_and(|n| TYPES.contains(&n)) {
                        return Err(format!("{at}: {name} is not a type ({})", TYPES.join(", ")));
                    }
                }
            }
            "properties" => {
                let Value::Object(properties) = value else {
                    return Err(format!("{at}: an object of schemas, one per field"));
                };
                for (name, field) in properties {
                    check_subschema(field, &format!("{at}.{name}"))?;
                }
            }
            "required" => {
                let ok = value.as_array().is_some_and(|names| names.iter().all(Value::is_string));
                if !ok {
                    return Err(format!("{at}: an array of field names, not {value}"));
                }
            }
            "additionalProperties" => {
                if !value.is_boolean() {
                    return Err(format!("{at}: true or false (a schema here is not checked)"));
                }
            }
            "items" => check_subschema(value, &at)?,
            "enum" => {
                if !value.is_array() {
                    return Err(format!("{at}: an array of allowed values, not {value}"));
                }
            }
            "minLength" | "maxLength" | "minItems" | "maxItems" => {
                if value.as_u64().is_none() {
                    return Err(format!("{at}: a whole number of 0 or more, not {value}"));
                }
            }
            _ => {
                // minimum, maximum
                if !value.is_number() {
                    return Err(format!("{at}: a number, not {value}"));
                }
            }
        }
    }
    Ok(())
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn has_type(value: &Value, wanted: &str) -> bool {
    let actual = type_name(value);
    actual == wanted || (wanted == "number" && actual == "integer")
}

fn check(schema: &Value, value: &Value, path: &str) -> Result<(), String> {
    let Some(schema) = schema.as_object() else {
        return Ok(()); // `true` / `{}`: anything
    };
    if let Some(wanted) = schema.get("type") {
        let types: Vec<&str> = match wanted {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| has_type(value, t)) {
            return Err(format!(
                "{path}: expected {}, got {}",
                types.join(" or "),
                type_name(value)
            ));
        }
    }
    if let Some(Value::Array(allowed)) = schema.get("enum") {
        if !allowed.contains(value) {
            return Err(format!(
                "{path}: {value} is not one of {}",
                Value::Array(allowed.clone())
            ));
        }
    }
    match value {
        Value::String(s) => {
            let chars = s.chars().count() as u64;
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                if chars < min {
                    return Err(format!("{path}: {chars} characters, at least {min} wanted"));
                }
            }
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if chars > max {
                    return Err(format!("{path}: {chars} characters, at most {max} allowed"));
                }
            }
        }
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
                if x.is_nan() || x < min {
                    return Err(format!("{path}: {n} is below the minimum {min}"));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
                if x.is_nan() || x > max {
                    return Err(format!("{path}: {n} is above the maximum {max}"));
                }
            }
        }
        Value::Array(items) => {
            let n = items.len() as u64;
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if n < min {
                    return Err(format!("{path}: {n} items, at least {min} wanted"));
                }
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if n > max {
                    return Err(format!("{path}: {n} items, at most {max} allowed"));
                }
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"))?;
                }
            }
        }
        Value::Object(fields) => {
            if let Some(Value::Array(required)) = schema.get("required") {
                for name in required.iter().filter_map(Value::as_str) {
                    if !fields.contains_key(name) {
                        return Err(format!("{path}: the field \"{name}\" is missing"));
                    }
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (name, field) in fields {
                match properties.and_then(|p| p.get(name)) {
                    Some(field_schema) => check(field_schema, field, &format!("{path}.{name}"))?,
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        return Err(format!("{path}: unexpected field \"{name}\""));
                    }
                    None => {}
                }
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "instruction": {"type": "string", "minLength": 3, "maxLength": 20},
                "score": {"type": "number", "minimum": 0, "maximum": 1},
                "verdict": {"enum": ["keep", "drop"]},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}
            },
            "required": ["instruction", "verdict"],
            "additionalProperties": false
        })
    }

    #[test]
    fn a_conforming_reply_passes() {
        let reply = json!({"instruction": "only reviews", "score": 1, "verdict": "keep", "tags": ["a"]});
        assert_eq!(validate(&schema(), &reply), Ok(()));
    }

    #[test]
    fn each_violation_names_its_place() {
        let cases = [
            (json!([]), "$: expected object, got array"),
            (json!({"verdict": "keep"}), "$: the field \"instruction\" is missing"),
            (
                json!({"instruction": 5, "verdict": "keep"}),
                "$.instruction: expected string, got integer",
            ),
            (
                json!({"instruction": "ab", "verdict": "keep"}),
                "$.instruction: 2 characters, at least 3 wanted",
            ),
            (
                json!({"instruction": "abc", "verdict": "maybe"}),
                "$.verdict: \"maybe\" is not one of [\"keep\",\"drop\"]",
            ),
            (
                json!({"instruction": "abc", "verdict": "keep", "score": 1.5}),
                "$.score: 1.5 is above the maximum 1",
            ),
            (
                json!({"instruction": "abc", "verdict": "keep", "tags": [1]}),
                "$.tags[0]: expected string, got integer",
            ),
            (
                json!({"instruction": "abc", "verdict": "keep", "extra": 1}),
                "$: unexpected field \"extra\"",
            ),
        ];
        for (reply, want) in cases {
            assert_eq!(validate(&schema(), &reply), Err(want.to_string()), "{reply}");
        }
    }

    #[test]
    fn schemas_are_checked_before_use() {
        assert_eq!(check_schema(&schema()), Ok(()));
        assert_eq!(
            check_schema(&json!({"type": "string", "format": "uri", "title": "t"})),
            Ok(())
        );
        let cases = [
            (json!([]), "$: a reply schema is a JSON object"),
            (
                json!({"type": "object", "required": "instruction"}),
                "$.required: an array of field names, not \"instruction\"",
            ),
            (json!({"type": "strng"}), "$.type: \"strng\" is not a type"),
            (
                json!({"properties": {"a": {"pattern": "^x"}}}),
                "$.properties.a.pattern: inf_ir does not check",
            ),
            (json!({"oneOf": [{}]}), "$.oneOf: inf_ir does not check"),
            (
                json!({"additionalProperties": {"type": "string"}}),
                "$.additionalProperties: true or false",
            ),
            (
                json!({"items": [{"type": "string"}]}),
                "$.items: a schema is an object or a boolean",
            ),
            (json!({"maxLength": -1}), "$.maxLength: a whole number"),
            (json!({"minimum": "0"}), "$.minimum: a number"),
            (
                json!({"properties": {"a": 5}}),
                "$.properties.a: a schema is an object or a boolean",
            ),
        ];
        for (schema, want) in cases {
            let got = check_schema(&schema).unwrap_err();
            assert!(got.starts_with(want), "{schema}: {got}");
        }
    }

    #[test]
    fn lengths_count_characters_and_unknown_keywords_are_ignored() {
        let schema = json!({"type": "string", "maxLength": 3, "format": "whatever"});
        assert_eq!(validate(&schema, &json!("äöü")), Ok(()));
        assert!(validate(&schema, &json!("äöüß")).is_err());
        assert_eq!(validate(&json!({}), &json!(null)), Ok(()));
        assert_eq!(validate(&json!({"type": ["string", "null"]}), &json!(null)), Ok(()));
        assert_eq!(validate(&json!({"type": "number"}), &json!(3)), Ok(()));
        assert!(validate(&json!({"type": "integer"}), &json!(3.5)).is_err());
    }
}
