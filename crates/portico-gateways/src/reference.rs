//! The field reference of every built-in gateway type, made from the JSON Schema of its
//! configuration type, which schemars makes from the type's doc comments: the reference pages
//! in `docs/reference/gateways/` and the code cannot drift apart (a test regenerates the pages
//! and fails when one differs).

/// The JSON Schema of the configurations of built-in gateway `gateway_type`.
pub fn schema(gateway_type: &str) -> Option<schemars::Schema> {
    use schemars::schema_for;
    Some(match gateway_type {
        "calendar" => schema_for!(crate::calendar::CalendarConfig),
        "webhook" | "github" | "slack" | "stripe" | "bitbucket" | "gerrit" => {
            schema_for!(crate::webhook::HookConfig)
        }
        "gitlab" => schema_for!(crate::gitlab::GitLabConfig),
        "file" => schema_for!(crate::file::FileConfig),
        "resource" => schema_for!(crate::resource::ResourceConfig),
        "amqp" => schema_for!(crate::amqp::AmqpConfig),
        "kafka" => schema_for!(crate::kafka::KafkaConfig),
        "mqtt" => schema_for!(crate::mqtt::MqttConfig),
        "nats" => schema_for!(crate::nats::NatsConfig),
        "postgres" => schema_for!(crate::postgres::PostgresConfig),
        "redis" => schema_for!(crate::redis::RedisConfig),
        "artifact" => schema_for!(crate::artifact::ArtifactConfig),
        "storagegrid" => schema_for!(crate::storagegrid::StorageGridConfig),
        "sqs" => schema_for!(crate::sqs::SqsConfig),
        "http-poll" => schema_for!(crate::http_poll::HttpPollConfig),
        "sftp" => schema_for!(crate::sftp::SftpConfig),
        "azure-queue" => schema_for!(crate::azure_queue::AzureQueueConfig),
        "azure-blob" => schema_for!(crate::azure_blob::AzureBlobConfig),
        "sns" => schema_for!(crate::sns::SnsConfig),
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
    if let Some(intro) = intro(gateway_type) {
        out.push_str(intro);
        out.push_str("\n\n");
    }
    out.push_str(&portico::reference::schema_fields(
        schema.as_value(),
        "Each value of the gateway's ConfigMap is one configuration: YAML or JSON with these \
         fields. Unknown fields are refused, with their line and column.",
        "##",
    ));
    Some(out)
}

/// What a type's page says before its fields, where the fields alone do not say it.
fn intro(gateway_type: &str) -> Option<&'static str> {
    Some(match gateway_type {
        "slack" => {
            "Slack's Events API, on a `webhook` endpoint. Each request must carry \
             `X-Slack-Signature: v0=<hex HMAC-SHA256 of \"v0:<timestamp>:<body>\">` under the app's \
             signing secret and `X-Slack-Request-Timestamp` within `tolerance` of now; a stale \
             timestamp or a signature already taken is refused as a replay (401, counted with \
             `reason=\"unauthorized\"`). Slack's URL verification is answered with its \
             challenge. `events` filters on the body's `event.type`."
        }
        "stripe" => {
            "Stripe's webhook endpoints, on a `webhook` endpoint. Each delivery must carry \
             `Stripe-Signature: t=<timestamp>,v1=<hex HMAC-SHA256 of \"<timestamp>.<body>\">` (any \
             of several `v1`) under the endpoint's secret, with `t` within `tolerance` of now; a \
             stale timestamp or a signature already taken is refused as a replay (401). `events` \
             filters on the body's `type`."
        }
        "bitbucket" => {
            "Bitbucket Cloud and Bitbucket Data Center webhooks, on a `webhook` endpoint. Each \
             delivery must carry `X-Hub-Signature: sha256=<hex HMAC-SHA256 of the body>` under \
             the webhook's secret (401 otherwise). `events` filters on `X-Event-Key` \
             (`repo:push`, `pullrequest:created`, `pr:opened`, …)."
        }
        "gerrit" => {
            "Gerrit's webhooks plugin, on a `webhook` endpoint. The plugin signs nothing: the \
             secret is the password of HTTP basic authentication (put it in the webhook's URL, \
             `https://user:secret@host/…`) or a bearer token (401 otherwise), and the \
             `Authorization` header never reaches the event. `events` filters on the body's \
             `type` (`patchset-created`, `change-merged`, …)."
        }
        _ => return None,
    })
}
