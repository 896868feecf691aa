//! The field reference of every built-in gateway type, made from the JSON Schema of its
//! configuration type, which schemars makes from the type's doc comments: the reference pages
//! in `docs/reference/gateways/` and the code cannot drift apart (a test regenerates the pages
//! and fails when one differs).

/// The JSON Schema of the configurations of built-in gateway `gateway_type`.
pub fn schema(gateway_type: &str) -> Option<schemars::Schema> {
    use schemars::schema_for;
    Some(match gateway_type {
        "calendar" => schema_for!(crate::calendar::CalendarConfig),
        "webhook" | "github" => schema_for!(crate::webhook::HookConfig),
        "gitlab" => schema_for!(crate::gitlab::GitLabConfig),
        "file" => schema_for!(crate::file::FileConfig),
        "resource" => schema_for!(crate::resource::ResourceConfig),
        "amqp" => schema_for!(crate::amqp::AmqpConfig),
        "kafka" => schema_for!(crate::kafka::KafkaConfig),
        "mqtt" => schema_for!(crate::mqtt::MqttConfig),
        "nats" => schema_for!(crate::nats::NatsConfig),
        "redis" => schema_for!(crate::redis::RedisConfig),
        "artifact" => schema_for!(crate::artifact::ArtifactConfig),
        "storagegrid" => schema_for!(crate::storagegrid::StorageGridConfig),
        _ => return None,
    })
}

/// The reference page (Markdown) of built-in gateway `gateway_type`'s configuration: its
/// field tables made by [`portico::reference::schema_fields`].
pub fn page(gateway_type: &str) -> Option<String> {
    let schema = schema(gateway_type)?;
    let mut out = format!("# `{gateway_type}` configurations\n\n");
    out.push_str(
        "<!-- Generated from the configuration type's doc comments: edit those, then run \
         `PORTICO_BLESS=1 cargo test -p portico-gateways --test reference_docs`. -->\n\n",
    );
    out.push_str(&portico::reference::schema_fields(
        schema.as_value(),
        "Each value of the gateway's ConfigMap is one configuration: YAML or JSON with these \
         fields. Unknown fields are refused, with their line and column.",
        "##",
    ));
    Some(out)
}
