//! Typed values out of a JSON tree; never serde's derived deserializers (66 KB: performance.md).

use serde_json::Value;

/// The one way JSON is parsed here: clippy.toml refuses `from_str` and `from_slice`, which into any
/// other type bring serde's deserializer code for that type into the .wasm.
#[allow(clippy::disallowed_methods)]
pub fn parse(text: impl AsRef<[u8]>) -> Result<Value, serde_json::Error> {
    serde_json::from_slice(text.as_ref())
}

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

/// A string or an integer is quoted, any other value only named (no float formatting code).
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
