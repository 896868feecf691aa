//! A calendar gateway as a gRPC server (Portico's gRPC style): the whole gateway is one
//! [`GrpcGateway`] impl. It takes the configurations of the built-in `calendar` gateway
//! (`schedule` or `interval`, `timezone`, `exclusionDates`, `recurrence`, `userPayload`) and
//! streams one `{"eventTime", "userPayload"}` JSON event per due time.
//!
//! The server validates each configuration in `ValidateGateway`, so a bad one shows on its
//! node with the reason; the framework cancels the stream when a configuration stops, which
//! drops [`GrpcGateway::run`]'s future: there is nothing else to clean up.

use chrono::Utc;
use portico::grpc_server::{EventSender, GrpcGateway};
use portico::proto::v1::GatewayConfig;
use portico::{ConfigError, Event};
use portico_gateways::calendar::{CalendarConfig, Schedule};
use tonic::Status;

/// The calendar, served over gRPC.
#[derive(Debug, Default, Clone)]
pub struct GrpcCalendar;

fn schedule(config: &GatewayConfig) -> Result<(CalendarConfig, Schedule), ConfigError> {
    let parsed: CalendarConfig = config.parse()?;
    let schedule = Schedule::parse(&parsed)?;
    Ok((parsed, schedule))
}

impl GrpcGateway for GrpcCalendar {
    fn validate(&self, config: &GatewayConfig) -> Result<(), ConfigError> {
        schedule(config).map(|_| ())
    }

    async fn run(&self, config: GatewayConfig, events: EventSender) -> Result<(), Status> {
        let (parsed, schedule) = schedule(&config)?;
        let user_payload = parsed.user_payload.unwrap_or(serde_json::Value::Null);
        let mut last = Utc::now();
        loop {
            let Some(next) = schedule.next_after(last) else {
                // No due time is left (every one is excluded): the configuration is done.
                return Ok(());
            };
            let wait = (next - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(wait).await;
            last = next;
            let body = serde_json::json!({
                "eventTime": next.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "userPayload": user_payload,
            });
            let event = Event::json(&body)
                .map_err(|e| Status::internal(format!("cannot encode the event: {e}")))?
                .with_time(next);
            events.send(event).await?;
        }
    }
}
