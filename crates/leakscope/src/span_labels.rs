//! Tracing spans as allocation labels (feature `tracing`): while a span is
//! entered on a thread, the thread's allocations carry the span's name and
//! chosen fields as labels, so heap profiles split by RPC method, tenant or
//! route with no extra code:
//!
//! ```no_run
//! use tracing_subscriber::prelude::*;
//! tracing_subscriber::registry()
//!     .with(leakscope::span_labels::SpanLabels::new().with_fields(["method"]))
//!     .init();
//! ```
//!
//! Choose fields with few distinct values (a method, not a request id):
//! every distinct label set is a separate series in the profile.

use std::cell::RefCell;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::labels::{push_labels, restore_labels};

/// The layer; see the module documentation.
#[derive(Debug, Clone)]
pub struct SpanLabels {
    span_key: Option<String>,
    fields: Vec<String>,
}

impl Default for SpanLabels {
    fn default() -> Self {
        Self::new()
    }
}

impl SpanLabels {
    /// Labels each allocation with the entered span's name (`span=NAME`).
    pub fn new() -> Self {
        SpanLabels {
            span_key: Some("span".to_string()),
            fields: Vec::new(),
        }
    }

    /// Also turns these span fields into labels (`method=Echo`).
    pub fn with_fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.fields.extend(fields.into_iter().map(Into::into));
        self
    }

    /// The label key for the span's name (`None`: do not label by name).
    pub fn span_key(mut self, key: Option<&str>) -> Self {
        self.span_key = key.map(str::to_string);
        self
    }
}

/// The labels a span contributes, kept in the span's extensions.
struct SpanLabelSet(Vec<(String, String)>);

struct FieldVisitor<'a> {
    wanted: &'a [String],
    out: &'a mut Vec<(String, String)>,
}

impl FieldVisitor<'_> {
    fn put(&mut self, field: &Field, value: String) {
        if self.wanted.iter().any(|w| w == field.name()) {
            self.out.retain(|(k, _)| k != field.name());
            self.out.push((field.name().to_string(), value));
        }
    }
}

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

thread_local! {
    /// Label states to restore, one per entered span with labels.
    static ENTERED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

impl<S> Layer<S> for SpanLabels
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut labels = Vec::new();
        if let Some(key) = &self.span_key {
            labels.push((key.clone(), attrs.metadata().name().to_string()));
        }
        attrs.record(&mut FieldVisitor {
            wanted: &self.fields,
            out: &mut labels,
        });
        span.extensions_mut().insert(SpanLabelSet(labels));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(SpanLabelSet(labels)) = extensions.get_mut::<SpanLabelSet>() {
            values.record(&mut FieldVisitor {
                wanted: &self.fields,
                out: labels,
            });
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let extensions = span.extensions();
        if let Some(SpanLabelSet(labels)) = extensions.get::<SpanLabelSet>() {
            let previous = push_labels(labels);
            ENTERED.with(|e| e.borrow_mut().push(previous));
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if span.extensions().get::<SpanLabelSet>().is_some() {
            if let Some(previous) = ENTERED.with(|e| e.borrow_mut().pop()) {
                restore_labels(previous);
            }
        }
    }
}
