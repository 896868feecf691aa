//! `grpc-calendar`: serves [`grpc_calendar::GrpcCalendar`] on
//! `127.0.0.1:$GATEWAY_PROCESSOR_GRPC_SERVER_PORT`. Run it beside its gateway with
//! `portico run examples/grpc-calendar/gateway.yaml -- cargo run -p grpc-calendar`.

fn main() -> std::process::ExitCode {
    portico::grpc_server::run(grpc_calendar::GrpcCalendar)
}
