//! What a policy printed while the harness ran it: its `log` records and the lines it wrote
//! to stdout or stderr (a Python traceback, a JavaScript exception), which the gateway logs
//! under `portico::policy`. The harness shows them under a failed case.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// The lines captured so far.
#[derive(Clone, Default)]
pub struct Captured {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Captured {
    /// Run `f` on this thread with the policy's output captured here (and not logged).
    pub fn during<T>(&self, f: impl FnOnce() -> T) -> T {
        let subscriber = tracing_subscriber::registry().with(CaptureLayer { into: self.clone() });
        tracing::subscriber::with_default(subscriber, f)
    }

    /// The lines captured, leaving none.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.lines.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

struct CaptureLayer {
    into: Captured,
}

impl<S: Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &Event<'_>, _context: Context<'_, S>) {
        if event.metadata().target() != "portico::policy" {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        // Only what the guest said: its output streams and its `log.write` records.
        let text = match (line.stream, line.fields) {
            (Some(stream), _) => format!("{stream}: {}", line.message),
            (None, Some(fields)) if fields.is_empty() => {
                format!("log {}: {}", event.metadata().level().as_str().to_lowercase(), line.message)
            }
            (None, Some(fields)) => format!("log {}: {} ({fields})", event.metadata().level().as_str().to_lowercase(), line.message),
            (None, None) => return,
        };
        self.into.lines.lock().unwrap_or_else(|e| e.into_inner()).push(text);
    }
}

#[derive(Default)]
struct Line {
    message: String,
    stream: Option<String>,
    fields: Option<String>,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "stream" => self.stream = Some(value.to_owned()),
            "fields" => self.fields = Some(value.to_owned()),
            "message" => self.message = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}
