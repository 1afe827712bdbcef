//! `baton_function`: a function of the tenant whose API key manages it, through a router's
//! tenant API (as `baton functions deploy` does, so images are resolved to digests the same
//! way). Every attribute is read back from the federation, so a change made outside
//! Terraform is a diff; what the configuration leaves out takes the federation's default
//! and keeps it. Only a new name replaces the function; everything else is a redeploy in
//! place. Import by name, with the provider's API key.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json, json};
use tf_provider::schema::{AttributeType, Schema};
use tf_provider::value::{Value, ValueEmpty, ValueList, ValueMap, ValueNumber, ValueString};
use tf_provider::{AttributePath, Diagnostics, Resource};

use crate::api::{Api, ApiError};
use crate::plan::{self, filled_in};
use crate::provider::{Shared, api};
use crate::schema::{
    absent, computed, defaulted, found, optional, outcome, removed, report, required, schema, sensitive,
};

/// State of a `baton_function`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionState<'a> {
    #[serde(borrow = "'a")]
    id: ValueString<'a>,
    name: ValueString<'a>,
    api_key: ValueString<'a>,
    image: ValueString<'a>,
    executable: ValueString<'a>,
    command: ValueList<ValueString<'a>>,
    args: ValueList<ValueString<'a>>,
    env: ValueMap<'a, ValueString<'a>>,
    port: ValueNumber,
    memory_mib: ValueNumber,
    cpu_millis: ValueNumber,
    timeout: ValueString<'a>,
    min_scale: ValueNumber,
    max_scale: ValueNumber,
    container_concurrency: ValueNumber,
    reserved_concurrency: ValueNumber,
    home_region: ValueString<'a>,
    async_max_attempts: ValueNumber,
    async_max_age: ValueString<'a>,
    async_backoff_initial: ValueString<'a>,
    async_backoff_max: ValueString<'a>,
    async_retry_on: ValueList<ValueString<'a>>,
    async_max_share_percent: ValueNumber,
    image_digest: ValueString<'a>,
    cell: ValueString<'a>,
}

/// The async policy's durations: attribute, and its path under the spec's `async`.
const ASYNC_DURATIONS: [(&str, &[&str]); 3] = [
    ("async_max_age", &["max_age"]),
    ("async_backoff_initial", &["backoff", "initial"]),
    ("async_backoff_max", &["backoff", "max"]),
];

/// The `baton_function` resource.
pub struct FunctionResource(pub Shared);

/// The numbers of the spec: attribute, section of the spec (none: top level), field.
const NUMBERS: [(&str, Option<&str>, &str); 7] = [
    ("memory_mib", Some("resources"), "memory_mib"),
    ("cpu_millis", Some("resources"), "cpu_millis"),
    ("min_scale", Some("scaling"), "min_scale"),
    ("max_scale", Some("scaling"), "max_scale"),
    ("container_concurrency", Some("scaling"), "container_concurrency"),
    ("port", None, "port"),
    ("reserved_concurrency", None, "reserved_concurrency"),
];

impl<'a> FunctionState<'a> {
    fn number(&self, attribute: &str) -> &ValueNumber {
        match attribute {
            "memory_mib" => &self.memory_mib,
            "cpu_millis" => &self.cpu_millis,
            "min_scale" => &self.min_scale,
            "max_scale" => &self.max_scale,
            "container_concurrency" => &self.container_concurrency,
            "reserved_concurrency" => &self.reserved_concurrency,
            _ => &self.port,
        }
    }

    fn async_duration(&self, attribute: &str) -> &ValueString<'a> {
        match attribute {
            "async_max_age" => &self.async_max_age,
            "async_backoff_initial" => &self.async_backoff_initial,
            _ => &self.async_backoff_max,
        }
    }

    /// The spec's `async`, from the attributes given (none: the federation's defaults).
    fn async_policy(&self) -> Option<Json> {
        let mut policy = json!({});
        if let Some(&n) = self.async_max_attempts.as_ref_option() {
            policy["max_attempts"] = n.into();
        }
        for (attribute, path) in ASYNC_DURATIONS {
            if let Some(d) = self.async_duration(attribute).as_ref_option() {
                match path {
                    [field] => policy[*field] = d.as_ref().into(),
                    [section, field] => {
                        if policy.get(*section).is_none() {
                            policy[*section] = json!({});
                        }
                        policy[*section][*field] = d.as_ref().into();
                    }
                    _ => {}
                }
            }
        }
        if !self.async_retry_on.is_null() {
            policy["retry_on"] = plan::strings(&self.async_retry_on).into();
        }
        if let Some(&percent) = self.async_max_share_percent.as_ref_option() {
            policy["max_share"] = (percent as f64 / 100.0).into();
        }
        policy.as_object().is_some_and(|o| !o.is_empty()).then_some(policy)
    }

    fn key(&self) -> Option<&str> {
        self.api_key.as_ref_option().map(|k| k.as_ref())
    }

    /// The spec to PUT: every known value the state has; the federation fills in the rest.
    fn spec(&self) -> Json {
        let mut spec = Map::new();
        let text = |v: &ValueString<'_>| v.as_ref_option().map(|s| Json::from(s.as_ref()));
        if let Some(image) = text(&self.image) {
            spec.insert("image".into(), image);
        }
        if let Some(executable) = text(&self.executable) {
            spec.insert("runtime".into(), "process".into());
            spec.insert("executable".into(), executable);
        }
        if !self.command.is_null() {
            spec.insert("command".into(), plan::strings(&self.command).into());
        }
        if !self.args.is_null() {
            spec.insert("args".into(), plan::strings(&self.args).into());
        }
        if let Some(env) = self.env.as_ref_option() {
            let env: Map<String, Json> = env
                .iter()
                .filter_map(|(k, v)| v.as_ref_option().map(|v| (k.to_string(), Json::from(v.as_ref()))))
                .collect();
            spec.insert("env".into(), env.into());
        }
        for (attribute, section, field) in NUMBERS {
            let Some(&n) = self.number(attribute).as_ref_option() else { continue };
            match section {
                Some(section) => {
                    let part = spec.entry(section).or_insert_with(|| json!({}));
                    part[field] = n.into();
                }
                None => {
                    spec.insert(field.into(), n.into());
                }
            }
        }
        if let Some(timeout) = text(&self.timeout) {
            spec.insert("timeout".into(), timeout);
        }
        if let Some(region) = text(&self.home_region) {
            spec.insert("home_region".into(), region);
        }
        if let Some(policy) = self.async_policy() {
            spec.insert("async".into(), policy);
        }
        Json::Object(spec)
    }

    /// The state of the function the router `described`, matched to `prior` (which gives
    /// the name, the key, and how empty lists and durations were written).
    fn described(described: &Json, prior: &FunctionState<'a>) -> FunctionState<'a> {
        let spec = &described["spec"];
        let text = |v: &Json| plan::string(v.as_str().unwrap_or_default());
        let strings = |v: &Json| -> Vec<String> {
            v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
        };
        let env: BTreeMap<String, String> = spec["env"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect();
        let number = |section: Option<&str>, field: &str| -> ValueNumber {
            let value = match section {
                Some(section) => &spec[section][field],
                None => &spec[field],
            };
            value.as_i64().into()
        };
        let timeout = spec["timeout"]
            .as_str()
            .and_then(|t| humantime::parse_duration(t).ok())
            .map_or(Value::Null, |t: Duration| plan::duration(t, &prior.timeout));
        let name = described["name"].as_str().unwrap_or_default().to_string();
        let policy = &spec["async"];
        // As the configuration spells it when it is the same time, else as stored (an import
        // has no configuration to go by).
        let async_duration = |path: &[&str], prior: &ValueString<'_>| {
            let stored = path.iter().fold(policy, |v, field| &v[*field]).as_str();
            match stored.map(|t| (t, humantime::parse_duration(t))) {
                Some((_, Ok(t))) if !prior.is_null() => plan::duration(t, prior),
                Some((t, _)) => plan::string(t),
                None => Value::Null,
            }
        };
        FunctionState {
            id: Value::Value(name.clone().into()),
            name: Value::Value(name.into()),
            api_key: prior.api_key.clone(),
            image: text(&spec["image"]),
            executable: text(&spec["executable"]),
            command: plan::list(strings(&spec["command"]), &prior.command),
            args: plan::list(strings(&spec["args"]), &prior.args),
            env: plan::map(env, &prior.env),
            port: number(None, "port"),
            memory_mib: number(Some("resources"), "memory_mib"),
            cpu_millis: number(Some("resources"), "cpu_millis"),
            timeout,
            min_scale: number(Some("scaling"), "min_scale"),
            max_scale: number(Some("scaling"), "max_scale"),
            container_concurrency: number(Some("scaling"), "container_concurrency"),
            reserved_concurrency: number(None, "reserved_concurrency"),
            home_region: text(&described["home_region"]),
            async_max_attempts: policy["max_attempts"].as_i64().into(),
            async_max_age: async_duration(&["max_age"], &prior.async_max_age),
            async_backoff_initial: async_duration(&["backoff", "initial"], &prior.async_backoff_initial),
            async_backoff_max: async_duration(&["backoff", "max"], &prior.async_backoff_max),
            async_retry_on: plan::list(strings(&policy["retry_on"]), &prior.async_retry_on),
            // Whole percent: a share the API holds with more digits reads back rounded.
            async_max_share_percent: policy["max_share"].as_f64().map(|s| (s * 100.0).round() as i64).into(),
            image_digest: text(&spec["image_digest"]),
            cell: text(&described["cell"]),
        }
    }
}

/// The router's description of function `name`, or none when the key's tenant has none.
async fn get(api: &Api, key: Option<&str>, name: &str) -> Result<Option<Json>, ApiError> {
    let answer = api.router(key, Method::GET, &format!("/v1/functions/{name}"), None).await?;
    match answer.status {
        StatusCode::OK => Ok(Some(answer.body)),
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(answer.refused(&format!("reading function {name}"))),
    }
}

/// Deploys `state` and reads the function back.
async fn put<'a>(api: &Api, state: &FunctionState<'a>) -> Result<FunctionState<'a>, ApiError> {
    let name = state.name.as_str();
    let path = format!("/v1/functions/{name}");
    let answer = api.router(state.key(), Method::PUT, &path, Some(&state.spec())).await?;
    if !answer.status.is_success() {
        return Err(answer.refused(&format!("deploying function {name}")));
    }
    match get(api, state.key(), name).await? {
        Some(described) => Ok(FunctionState::described(&described, state)),
        None => Err(ApiError::NotFound(format!("function {name} was deployed but does not read back"))),
    }
}

fn string_list() -> AttributeType {
    AttributeType::List(Box::new(AttributeType::String))
}

#[async_trait]
impl Resource for FunctionResource {
    type State<'a> = FunctionState<'a>;
    type PrivateState<'a> = ValueEmpty;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        let (string, number) = (AttributeType::String, AttributeType::Number);
        Some(schema(
            "A function: a container image or a host executable, its resources and scaling (docs/router.md, \"What a \
             spec may hold\"). Import: `terraform import baton_function.NAME name` (with the provider's api_key).",
            vec![
                ("id", computed(string.clone(), "The function's name.")),
                (
                    "name",
                    required(string.clone(), "Lowercase letters, digits and '-'. Changing it replaces the function."),
                ),
                (
                    "api_key",
                    sensitive(optional(
                        string.clone(),
                        "The tenant's API key to manage it with (default: the provider's). Another key of the same \
                         tenant may replace it in place.",
                    )),
                ),
                (
                    "image",
                    optional(
                        string.clone(),
                        "Container image (registry/repository:tag or …@sha256:…); resolved to a digest at each apply.",
                    ),
                ),
                (
                    "executable",
                    optional(
                        string.clone(),
                        "Absolute path of a host executable (the process runtime; the tenant needs executables).",
                    ),
                ),
                ("command", optional(string_list(), "Replaces the image's entrypoint (image only).")),
                ("args", optional(string_list(), "Arguments: after the executable, or in place of the image's Cmd.")),
                ("env", optional(AttributeType::Map(Box::new(string.clone())), "Environment variables.")),
                (
                    "port",
                    optional(
                        number.clone(),
                        "The port an image's function listens on (default: its exposed port, else 8080).",
                    ),
                ),
                ("memory_mib", defaulted(number.clone(), "Memory of each sandbox, MiB.")),
                ("cpu_millis", defaulted(number.clone(), "CPU of each sandbox, thousandths of a core.")),
                ("timeout", defaulted(string.clone(), "Longest one call may take (\"30s\", \"5m\").")),
                ("min_scale", defaulted(number.clone(), "Fewest sandboxes, even without traffic.")),
                ("max_scale", defaulted(number.clone(), "Most sandboxes.")),
                (
                    "container_concurrency",
                    defaulted(number.clone(), "Most calls one sandbox takes at once (0: no limit)."),
                ),
                (
                    "reserved_concurrency",
                    optional(
                        number.clone(),
                        "Most calls in flight at once, sync and async together; 0 stops the function (unset: no cap).",
                    ),
                ),
                ("home_region", defaulted(string.clone(), "Region it lives in (default: the tenant's).")),
                (
                    "async_max_attempts",
                    optional(
                        number.clone(),
                        "Tries an async call gets, the first included (default 3; docs/async.md).",
                    ),
                ),
                (
                    "async_max_age",
                    optional(
                        string.clone(),
                        "An async call not done this long after it was accepted is dead (default \"6h\").",
                    ),
                ),
                (
                    "async_backoff_initial",
                    optional(string.clone(), "Wait before an async call's first retry (default \"1s\")."),
                ),
                (
                    "async_backoff_max",
                    optional(string.clone(), "Longest wait between an async call's tries (default \"5m\")."),
                ),
                (
                    "async_retry_on",
                    optional(
                        string_list(),
                        "Outcomes of an async try that are tried again: 5xx, 429, timeout, 4xx (default: 5xx, 429, timeout).",
                    ),
                ),
                (
                    "async_max_share_percent",
                    optional(
                        number,
                        "Most of the function's capacity async calls may hold at once, in whole percent (default 80).",
                    ),
                ),
                ("image_digest", computed(string.clone(), "The digest the image resolved to at the last apply.")),
                ("cell", computed(string, "The cell that owns it now.")),
            ],
        ))
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: FunctionState<'a>) -> Option<()> {
        match (&config.image, &config.executable) {
            (Value::Null, Value::Null) => diags.root_error_short("set one of image and executable"),
            (Value::Value(_), Value::Value(_)) => {
                diags.error_short("set image or executable, not both", AttributePath::new("executable"))
            }
            _ => {}
        }
        if let Some(name) = config.name.as_ref_option()
            && !baton_model::function::is_label(name)
        {
            diags.error_short(
                format!("name {name:?}: 1-63 lowercase letters, digits and '-', starting with a letter"),
                AttributePath::new("name"),
            );
        }
        if let Some(timeout) = config.timeout.as_ref_option()
            && let Err(e) = humantime::parse_duration(timeout)
        {
            diags.error_short(
                format!("timeout {timeout:?}: {e} (write \"30s\", \"5m\")"),
                AttributePath::new("timeout"),
            );
        }
        for (attribute, _, _) in NUMBERS {
            if let Some(&n) = config.number(attribute).as_ref_option()
                && n < 0
            {
                diags.error_short(format!("{attribute} cannot be negative"), AttributePath::new(attribute));
            }
        }
        for (attribute, _) in ASYNC_DURATIONS {
            if let Some(d) = config.async_duration(attribute).as_ref_option()
                && let Err(e) = humantime::parse_duration(d)
            {
                diags.error_short(
                    format!("{attribute} {d:?}: {e} (write \"30s\", \"5m\")"),
                    AttributePath::new(attribute),
                );
            }
        }
        if let Some(&p) = config.async_max_share_percent.as_ref_option()
            && !(1..=100).contains(&p)
        {
            diags
                .error_short("async_max_share_percent must be 1 to 100", AttributePath::new("async_max_share_percent"));
        }
        for on in plan::strings(&config.async_retry_on) {
            if !["5xx", "429", "timeout", "4xx"].contains(&on.as_str()) {
                diags.error_short(
                    format!("async_retry_on {on:?}: one of 5xx, 429, timeout, 4xx"),
                    AttributePath::new("async_retry_on"),
                );
            }
        }
        Some(())
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        state: FunctionState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(FunctionState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        match get(api, state.key(), state.name.as_str()).await {
            Ok(Some(described)) => Some((FunctionState::described(&described, &state), private)),
            Ok(None) => None,
            Err(e) => {
                report(diags, &format!("reading function {}", state.name.as_str()), e);
                Some((state, private))
            }
        }
    }

    async fn plan_create<'a>(
        &self,
        _diags: &mut Diagnostics,
        proposed: FunctionState<'a>,
        _config: FunctionState<'a>,
        _meta: ValueEmpty,
    ) -> Option<(FunctionState<'a>, ValueEmpty)> {
        let mut state = proposed;
        state.id = state.name.clone();
        for number in [
            &mut state.memory_mib,
            &mut state.cpu_millis,
            &mut state.min_scale,
            &mut state.max_scale,
            &mut state.container_concurrency,
        ] {
            filled_in(number);
        }
        filled_in(&mut state.timeout);
        filled_in(&mut state.home_region);
        state.image_digest = if state.image.is_null() { Value::Null } else { Value::Unknown };
        state.cell = Value::Unknown;
        Some((state, ValueEmpty::default()))
    }

    async fn plan_update<'a>(
        &self,
        _diags: &mut Diagnostics,
        prior: FunctionState<'a>,
        proposed: FunctionState<'a>,
        _config: FunctionState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(FunctionState<'a>, ValueEmpty, Vec<AttributePath>)> {
        let mut state = proposed;
        let replace = if state.name != prior.name { vec![AttributePath::new("name")] } else { Vec::new() };
        if state != prior {
            // A redeploy resolves the image again (its tag may name another build now),
            // and the owner may have moved since the last read.
            state.image_digest = if state.image.is_null() { Value::Null } else { Value::Unknown };
            state.cell = Value::Unknown;
        }
        Some((state, private, replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _diags: &mut Diagnostics,
        _prior: FunctionState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<ValueEmpty> {
        Some(private)
    }

    async fn create<'a>(
        &self,
        diags: &mut Diagnostics,
        planned: FunctionState<'a>,
        _config: FunctionState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(FunctionState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        let name = planned.name.as_str().to_string();
        absent(diags, "function", &name, get(api, planned.key(), &name).await)?;
        outcome(diags, &format!("creating function {name}"), put(api, &planned).await).map(|state| (state, private))
    }

    async fn update<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: FunctionState<'a>,
        planned: FunctionState<'a>,
        _config: FunctionState<'a>,
        private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<(FunctionState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        let name = planned.name.as_str().to_string();
        // A key of another tenant would deploy a second function there and leave this one.
        if planned.api_key != prior.api_key {
            match get(api, planned.key(), &name).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    diags.error(
                        format!("function {name}: the new api_key does not see it"),
                        "a key of another tenant? A function does not change tenants: replace it \
                         (terraform apply -replace=…) to deploy it under the other tenant",
                        AttributePath::new("api_key"),
                    );
                    return None;
                }
                Err(e) => {
                    report(diags, &format!("updating function {name}"), e);
                    return None;
                }
            }
        }
        outcome(diags, &format!("updating function {name}"), put(api, &planned).await).map(|state| (state, private))
    }

    async fn destroy<'a>(
        &self,
        diags: &mut Diagnostics,
        prior: FunctionState<'a>,
        _private: ValueEmpty,
        _meta: ValueEmpty,
    ) -> Option<()> {
        let api = api(&self.0, diags)?;
        let name = prior.name.as_str().to_string();
        let what = format!("deleting function {name}");
        let deleted = async {
            let answer = api.router(prior.key(), Method::DELETE, &format!("/v1/functions/{name}"), None).await?;
            if answer.status.is_success() { Ok(()) } else { Err(answer.refused(&what)) }
        };
        removed(diags, &what, deleted.await)
    }

    async fn import<'a>(&self, diags: &mut Diagnostics, id: String) -> Option<(FunctionState<'a>, ValueEmpty)> {
        let api = api(&self.0, diags)?;
        let described = found(diags, "function", &id, get(api, None, &id).await)?;
        Some((FunctionState::described(&described, &FunctionState::default()), ValueEmpty::default()))
    }
}
