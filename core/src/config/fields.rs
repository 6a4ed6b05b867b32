//! Reading the configuration field by field, with errors that name each field by its path.

use std::fmt;

use serde_json::Value;

use crate::json::{self, FromJson};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

impl ConfigError {
    pub(super) fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}: {}", self.field, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found, in field order: all at once, not one per rollout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub(super) Vec<ConfigError>);

impl ConfigErrors {
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    /// The first problem (there is always at least one).
    pub fn first(&self) -> &ConfigError {
        &self.0[0]
    }
}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<ConfigError>);

impl Problems {
    pub(super) fn check<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    pub(super) fn into_result<T>(self, value: Option<T>) -> Result<T, ConfigErrors> {
        match value {
            Some(v) if self.0.is_empty() => Ok(v),
            _ => Err(ConfigErrors(self.0)),
        }
    }
}

/// One JSON object read field by field, naming a wrong or unknown field by its path
/// (`targets[1].scope`); why not serde's derive: docs/design.md, Configuration.
pub(super) struct Fields<'a> {
    map: serde_json::Map<String, Value>,
    /// Looked up, not removed: that keeps the map's removal code out of the .wasm.
    read: Vec<&'static str>,
    /// `""` at the top level, else the object's path and a dot: `cache.`, `targets[0].`.
    prefix: String,
    pub(super) problems: &'a mut Problems,
}

impl<'a> Fields<'a> {
    /// The object at `path` (`""`: the whole configuration), or None (reported) if it is not one.
    pub(super) fn of(value: Value, path: &str, problems: &'a mut Problems) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Fields {
                map,
                read: Vec::new(),
                prefix: if path.is_empty() {
                    String::new()
                } else {
                    format!("{path}.")
                },
                problems,
            }),
            _ => {
                let field = if path.is_empty() {
                    "configuration"
                } else {
                    path
                };
                problems
                    .0
                    .push(ConfigError::new(field, "must be a JSON object"));
                None
            }
        }
    }

    fn path(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(super) fn value(&mut self, field: &'static str) -> Option<Value> {
        self.read.push(field);
        self.map.get(field).filter(|v| !v.is_null()).cloned()
    }

    /// The field as a T; None if it is absent, or of the wrong type (reported).
    pub(super) fn opt<T: FromJson>(&mut self, field: &'static str) -> Option<T> {
        let value = self.value(field)?;
        let read = T::from_json(&value);
        if read.is_none() {
            let path = self.path(field);
            let problem = format!("must be {}, not {}", T::EXPECTED, json::described(&value));
            self.problems.0.push(ConfigError::new(path, problem));
        }
        read
    }

    /// A value of another type is refused without being quoted, as `opt`'s message would.
    pub(super) fn secret(&mut self, field: &'static str) -> Option<String> {
        match self.value(field)? {
            Value::String(secret) => Some(secret),
            _ => {
                let path = self.path(field);
                let problem = ConfigError::new(path, "must be a string (the value is not shown)");
                self.problems.0.push(problem);
                None
            }
        }
    }

    pub(super) fn or<T: FromJson>(&mut self, field: &'static str, default: T) -> T {
        self.opt(field).unwrap_or(default)
    }

    /// A nested object, read by `read`. Absent, or not an object (reported), `read` sees an empty
    /// object and so gives the defaults.
    pub(super) fn object<T>(
        &mut self,
        field: &'static str,
        read: impl FnOnce(&mut Fields) -> T,
    ) -> T {
        let value = self
            .value(field)
            .unwrap_or_else(|| Value::Object(Default::default()));
        let path = self.path(field);
        let map = match value {
            Value::Object(map) => map,
            _ => {
                let problem = ConfigError::new(path.clone(), "must be a JSON object");
                self.problems.0.push(problem);
                Default::default()
            }
        };
        let mut fields = Fields {
            map,
            read: Vec::new(),
            prefix: format!("{path}."),
            problems: self.problems,
        };
        let read = read(&mut fields);
        fields.finish();
        read
    }

    /// Reports the unknown fields: those nobody read.
    pub(super) fn finish(self) {
        for key in self.map.keys().filter(|k| !self.read.contains(&k.as_str())) {
            let path = format!("{}{key}", self.prefix);
            self.problems
                .0
                .push(ConfigError::new(path, "is not a known field"));
        }
    }
}

/// A string value that says something: not blank, no control characters.
pub(super) fn non_empty(field: &str, value: String) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        Err(ConfigError::new(field, "must not be empty"))
    } else if value.chars().any(char::is_control) {
        Err(ConfigError::new(
            field,
            "must not contain control characters",
        ))
    } else {
        Ok(value)
    }
}
