//! Typed values read out of a JSON tree (`serde_json::Value`), for everything the filter parses;
//! never serde's derived deserializers, which cost the .wasm about 66 KB (docs/performance.md).

use serde_json::Value;

/// JSON text as a tree: the one way JSON is parsed in this workspace (clippy.toml refuses
/// `serde_json::from_str` and `from_slice`, which into any other type bring serde's deserializer
/// code for that type into the .wasm).
#[allow(clippy::disallowed_methods)]
pub fn parse(text: impl AsRef<[u8]>) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(text.as_ref())
}

/// A value of a JSON field, and what it must be when it is something else.
pub trait FromJson: Sized {
    /// What the value must be, for "must be …": `a string`, `true or false`.
    const EXPECTED: &'static str;
    fn from_json(value: &Value) -> Option<Self>;
}

impl FromJson for String {
    const EXPECTED: &'static str = "a string";
    fn from_json(value: &Value) -> Option<Self> {
        value.as_str().map(str::to_string)
    }
}

impl FromJson for bool {
    const EXPECTED: &'static str = "true or false";
    fn from_json(value: &Value) -> Option<Self> {
        value.as_bool()
    }
}

impl FromJson for u64 {
    const EXPECTED: &'static str = "a whole number, 0 or more";
    fn from_json(value: &Value) -> Option<Self> {
        value.as_u64()
    }
}

impl FromJson for u32 {
    const EXPECTED: &'static str = "a whole number from 0 to 4294967295";
    fn from_json(value: &Value) -> Option<Self> {
        value.as_u64().and_then(|n| u32::try_from(n).ok())
    }
}

/// The one of `names` that the value names, for a field that takes one of a few words.
pub fn named<T: Copy>(value: &Value, names: &[(&str, T)]) -> Option<T> {
    let word = value.as_str()?;
    names
        .iter()
        .find(|(name, _)| *name == word)
        .map(|&(_, v)| v)
}

/// The value, described for a message that says what was found instead: a string or an integer is
/// quoted, any other value only named (no floating-point number is formatted).
pub fn described(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => format!("`{u}`"),
            (None, Some(i)) => format!("`{i}`"),
            _ => "a number with a fraction or an exponent".into(),
        },
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// The string field `name` of an object: None when it is absent, null or not a string.
pub fn text(object: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    object.get(name).and_then(Value::as_str).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_numbers_outside_their_type_are_refused() {
        assert_eq!(
            u64::from_json(&json!(18446744073709551615u64)),
            Some(u64::MAX)
        );
        assert_eq!(u64::from_json(&json!(-1)), None);
        assert_eq!(u64::from_json(&json!(1.5)), None);
        assert_eq!(u64::from_json(&json!("5")), None);
        assert_eq!(u32::from_json(&json!(4294967295u64)), Some(u32::MAX));
        assert_eq!(u32::from_json(&json!(4294967296u64)), None);
    }

    #[test]
    fn strings_and_booleans_are_not_converted_from_other_types() {
        assert_eq!(String::from_json(&json!(5)), None);
        assert_eq!(bool::from_json(&json!("true")), None);
        assert_eq!(bool::from_json(&json!(false)), Some(false));
    }

    #[test]
    fn a_value_is_described_without_formatting_a_float() {
        assert_eq!(described(&json!(-3)), "`-3`");
        assert_eq!(described(&json!(7)), "`7`");
        assert_eq!(
            described(&json!(2.5)),
            "a number with a fraction or an exponent"
        );
        assert_eq!(described(&json!("five")), "the string \"five\"");
        assert_eq!(described(&json!([1])), "a list");
        assert_eq!(described(&json!({})), "an object");
        assert_eq!(described(&json!(true)), "`true`");
    }
}
