//! What the resources' plans share: how a value the federation fills in is planned, and how
//! a value read back is matched to what the configuration says, so that neither a server
//! default nor a different spelling of the same value is ever a diff.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use tf_provider::value::{Value, ValueList, ValueMap, ValueString};

/// An attribute the federation fills in when the configuration leaves it out: unknown
/// until applied.
pub fn filled_in<T>(value: &mut Value<T>) {
    if value.is_null() {
        *value = Value::Unknown;
    }
}

/// A string the federation holds, `""` standing for none.
pub fn string(server: &str) -> ValueString<'static> {
    if server.is_empty() { Value::Null } else { Value::Value(Cow::Owned(server.to_string())) }
}

/// A list the federation holds: empty is what the state said (null or `[]`) when it said
/// either.
pub fn list(server: Vec<String>, prior: &ValueList<ValueString<'_>>) -> ValueList<ValueString<'static>> {
    let prior_empty = prior.as_ref_option().is_some_and(Vec::is_empty);
    if server.is_empty() && !prior_empty {
        return Value::Null;
    }
    Value::Value(server.into_iter().map(|s| Value::Value(Cow::Owned(s))).collect())
}

/// A map the federation holds: empty as [`list`] has it.
pub fn map(
    server: BTreeMap<String, String>,
    prior: &ValueMap<'_, ValueString<'_>>,
) -> ValueMap<'static, ValueString<'static>> {
    let prior_empty = prior.as_ref_option().is_some_and(BTreeMap::is_empty);
    if server.is_empty() && !prior_empty {
        return Value::Null;
    }
    Value::Value(server.into_iter().map(|(k, v)| (Cow::Owned(k), Value::Value(Cow::Owned(v)))).collect())
}

/// A duration the federation holds, spelled as `prior` spells it when they are the same
/// length of time (`"1m"` and `"60s"`).
pub fn duration(server: Duration, prior: &ValueString<'_>) -> ValueString<'static> {
    match prior.as_ref_option() {
        Some(spelled) if humantime::parse_duration(spelled).ok() == Some(server) => {
            Value::Value(Cow::Owned(spelled.to_string()))
        }
        _ => Value::Value(Cow::Owned(humantime::format_duration(server).to_string())),
    }
}

/// A list of strings as plain strings (unknown and null members left out).
pub fn strings(list: &ValueList<ValueString<'_>>) -> Vec<String> {
    list.as_ref_option().into_iter().flatten().filter_map(|v| v.as_ref_option().map(|s| s.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_list_reads_back_as_the_configuration_wrote_it() {
        let null: ValueList<ValueString<'_>> = Value::Null;
        let empty: ValueList<ValueString<'_>> = Value::Value(vec![]);
        assert!(list(vec![], &null).is_null());
        assert_eq!(list(vec![], &empty), Value::Value(vec![]));
        let one = list(vec!["a".into()], &null);
        assert_eq!(strings(&one), ["a"]);
    }

    #[test]
    fn a_duration_keeps_its_spelling_when_it_is_the_same_time() {
        let prior: ValueString<'_> = Value::Value(Cow::Borrowed("1m"));
        assert_eq!(duration(Duration::from_secs(60), &prior).as_str(), "1m");
        assert_eq!(duration(Duration::from_secs(90), &prior).as_str(), "1m 30s");
        assert_eq!(duration(Duration::from_secs(60), &Value::Null).as_str(), "1m");
    }
}
