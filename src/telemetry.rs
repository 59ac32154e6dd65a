//! Logs and traces: `tracing` to stderr (JSON lines, or compact text in `dev`), and OpenTelemetry export over
//! OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the exporter reads the standard `OTEL_*` variables).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

/// Keeps the trace exporter alive; flushes it when dropped.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("warning: flushing traces failed: {e}");
        }
    }
}

/// Installs the process's subscriber. `service` names the process in traces (`eventfleet-ingress`, ...).
pub fn init(format: LogFormat, service: &str) -> Telemetry {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVENTFLEET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let provider = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").and_then(|_| match exporter(service) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("warning: OpenTelemetry export disabled: {e}");
            None
        }
    });
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("eventfleet")));
    // stdout is kept for command output (JSON documents, the `dev` banner); logs go to stderr.
    let (json, pretty) = match format {
        LogFormat::Json => (
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_writer(std::io::stderr),
            ),
            None,
        ),
        LogFormat::Pretty => (None, Some(tracing_subscriber::fmt::layer().compact().with_writer(std::io::stderr))),
    };
    // A second initialisation (never in the binary) would only be ignored.
    let _ = tracing_subscriber::registry().with(filter).with(json).with(pretty).with(otel).try_init();
    Telemetry { provider }
}

fn exporter(service: &str) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_http().build()?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service.to_owned()).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}
