//! Reading settings that figment gathered (defaults, a TOML file, the environment):
//! every value is taken as text and parsed here, so a bad value is reported with the
//! variable's name, the value and what is wrong with it.

use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use figment::{Figment, Provider};
use serde::Serialize;
use thiserror::Error;

/// Settings in layers: `defaults` < the TOML file named by the variable
/// `file_variable` (when set) < `environment`.
pub fn layered(defaults: impl Serialize, file_variable: &str, environment: impl Provider) -> Figment {
    let mut figment = Figment::from(Serialized::defaults(defaults));
    if let Ok(file) = std::env::var(file_variable) {
        figment = figment.merge(Toml::file_exact(file));
    }
    figment.merge(environment)
}

/// A variable whose value could not be parsed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{variable}={value:?} is invalid: {problem}")]
pub struct InvalidValue {
    /// The variable's name, as the user sets it.
    pub variable: &'static str,
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
}

/// A scalar from any source as text: env values may arrive parsed (`1` as a number)
/// and a TOML file may give numbers or booleans. `None` when unset.
pub fn text(value: Option<Value>) -> Option<String> {
    match value? {
        Value::String(_, s) => Some(s),
        Value::Char(_, c) => Some(c.to_string()),
        Value::Bool(_, b) => Some(b.to_string()),
        // Negative numbers too: dropping them would read `-1` as "unset".
        Value::Num(_, n) => n
            .to_u128()
            .map(|n| n.to_string())
            .or_else(|| n.to_i128().map(|n| n.to_string()))
            .or_else(|| n.to_f64().map(|n| n.to_string())),
        Value::Empty(_, _) => Some(String::new()),
        Value::Dict(..) | Value::Array(..) => Some("<a table or list>".to_owned()),
    }
}

/// `variable`'s value parsed (trimmed) by `parse`, or `default` when unset.
pub fn parse_or<T>(
    variable: &'static str,
    value: Option<Value>,
    default: T,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, InvalidValue> {
    Ok(parse_optional(variable, value, parse)?.unwrap_or(default))
}

/// `variable`'s value parsed (trimmed) by `parse`, or `None` when unset.
pub fn parse_optional<T>(
    variable: &'static str,
    value: Option<Value>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, InvalidValue> {
    match text(value) {
        None => Ok(None),
        Some(value) => parse(value.trim()).map(Some).map_err(|problem| InvalidValue { variable, value, problem }),
    }
}

/// `true`/`1` or `false`/`0`, in any case.
pub fn parse_bool(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err("expected true, false, 1 or 0".to_owned()),
    }
}

/// Any text but the empty one.
pub fn parse_non_empty(value: &str) -> Result<String, String> {
    if value.is_empty() { Err("must not be empty".to_owned()) } else { Ok(value.to_owned()) }
}

#[cfg(test)]
mod tests {
    use figment::value::{Num, Tag};

    use super::*;

    fn string(value: &str) -> Option<Value> {
        Some(Value::String(Tag::Default, value.to_owned()))
    }

    #[test]
    fn a_bad_value_is_reported_with_its_variable_and_problem() {
        let err = parse_or("APP_ENABLED", string("maybe"), false, parse_bool).unwrap_err();
        assert_eq!(err.to_string(), r#"APP_ENABLED="maybe" is invalid: expected true, false, 1 or 0"#);
    }

    #[test]
    fn an_unset_variable_takes_the_default() {
        assert_eq!(parse_or("APP_ENABLED", None, true, parse_bool), Ok(true));
        assert_eq!(parse_optional("APP_NAME", None, parse_non_empty), Ok(None));
    }

    #[test]
    fn values_are_trimmed_before_parsing() {
        assert_eq!(parse_or("APP_ENABLED", string(" 1 \n"), false, parse_bool), Ok(true));
    }

    #[test]
    fn an_empty_value_is_set_not_unset() {
        let err =
            parse_optional("APP_NAME", Some(Value::Empty(Tag::Default, figment::value::Empty::None)), parse_non_empty)
                .unwrap_err();
        assert_eq!(err.to_string(), r#"APP_NAME="" is invalid: must not be empty"#);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's own error type, in tests only
    fn the_environment_overrides_the_file_and_the_file_the_defaults() {
        #[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
        struct Raw {
            app_name: Option<Value>,
            app_port: Option<Value>,
            app_mode: Option<Value>,
        }
        figment::Jail::expect_with(|jail| {
            jail.create_file("app.toml", "app_name = \"from-file\"\napp_port = 8080\n")?;
            jail.set_env("APP_CONFIG_FILE", "app.toml");
            let defaults = Raw { app_mode: string("default"), app_port: string("1"), ..Raw::default() };
            let environment = Serialized::defaults(std::collections::BTreeMap::from([("app_port", "9090")]));
            let raw: Raw = layered(defaults, "APP_CONFIG_FILE", environment).extract()?;
            assert_eq!(text(raw.app_name).as_deref(), Some("from-file"));
            assert_eq!(text(raw.app_port).as_deref(), Some("9090"));
            assert_eq!(text(raw.app_mode).as_deref(), Some("default"));
            Ok(())
        });
    }

    #[test]
    fn numbers_from_a_file_are_read_as_text() {
        assert_eq!(text(Some(Value::Num(Tag::Default, Num::U8(7)))).as_deref(), Some("7"));
        assert_eq!(text(Some(Value::Num(Tag::Default, Num::I32(-1)))).as_deref(), Some("-1"));
        assert_eq!(text(Some(Value::Bool(Tag::Default, true))).as_deref(), Some("true"));
    }
}
