//! The gateway's log: one line per event on stderr, as text or as JSON
//! lines (`resetgate serve --log-format json`), filtered by `RESETGATE_LOG`
//! (`tracing_subscriber::EnvFilter` directives, default `info`).
//!
//! Every HTTP request runs in a [`request_span`] whose fields —
//! `request_id`, `client`, `principal`, `flow`, `workflow` — are filled in
//! as they become known and appear on every event logged while it runs
//! (on the request workers too). A JSON line holds `timestamp`, `level`,
//! `target`, `event` (the message), the request's fields, then the event's
//! own fields; an event's field wins over a span's of the same name.
//!
//! `resetgate serve` writes its lines through a buffer ([`Lines`]): an
//! event appends its line, and the `log-writer` thread writes whatever has
//! gathered to stderr with one `write`, at once after a quiet spell and
//! else at most once per [`LINES_DELAY`] (a line per `write`, at thousands
//! of events a second, cost the gateway and whatever reads its stderr a
//! system call and a wake-up each: BENCHMARKS.md, issue 13). Every line
//! is written, in order: a writer never drops one (past [`LINES_LIMIT`]
//! bytes waiting it writes them itself), the end of `serve` and a panic
//! write out what waits first. A `SIGKILL` loses at most the last [`LINES_DELAY`] of lines.
//! Other commands write each line at once.
//!
//! One line per event: a text line has every line break inside it written
//! as `\n` (a plugin's trap text or a diagnostic's help may hold one), a JSON
//! line escapes them by construction.
//!
//! Security events are logged where they happen (`runtime`: flow started
//! and ended, gate failed, lockout applied; `api`: refused requests and
//! sampled rate-limit hits; `plugin`: failed calls; `main`: reloads and
//! certificates); [`operator_action`] and [`lockout_cleared`] are the
//! events operator routes log. None of them carries a secret: no answer,
//! password, code, token or API key is ever a field.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::writer::EitherWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `TIMESTAMP LEVEL span{fields}: target: message field=value ...`
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber: `format` lines on stderr, filtered by
/// `RESETGATE_LOG` when it is set and valid, else by `level` (`info`, or
/// what `-v`/`-q` asked for: the environment, typically a service unit's,
/// is the more precise setting and wins). Later calls do nothing.
///
/// With `buffered` (`resetgate serve`), lines go through [`Lines`]; the
/// guard writes out what waits when it is dropped, which the caller does
/// before it writes anything else to stderr.
pub fn init(format: LogFormat, level: &str, buffered: bool) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RESETGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let lines = buffered.then(|| Lines::start(io::stderr()));
    let stderr = ToStderr(lines.as_ref().map(|l| l.0.clone()));
    let installed = match format {
        LogFormat::Text => builder
            .with_writer(OneLine(stderr))
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .with_writer(stderr)
            .fmt_fields(JsonFields)
            .event_format(JsonLines)
            .try_init(),
    };
    let lines = lines.filter(|_| installed.is_ok());
    if let Some(lines) = &lines {
        // A panic's message comes after every line logged before it.
        let shared = lines.0.clone();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            shared.write_out_unless_busy();
            previous(info);
        }));
    }
    LogGuard { _lines: lines }
}

/// Keeps the buffered log ([`Lines`]) running; dropping it writes out what
/// waits and stops the `log-writer` thread.
#[must_use = "dropping the guard stops the buffered log"]
pub struct LogGuard {
    _lines: Option<Lines<io::Stderr>>,
}

/// Log lines on their way to an output (stderr): appended by events,
/// written by the `log-writer` thread with one `write_all`, at once after
/// a quiet spell and else at most once per [`LINES_DELAY`].
pub struct Lines<W: io::Write + Send + 'static>(
    std::sync::Arc<LinesShared<W>>,
    Option<std::thread::JoinHandle<()>>,
);

/// What [`Lines`] and its writers share.
pub struct LinesShared<W> {
    state: std::sync::Mutex<LinesState>,
    /// The writer thread waits here for a first line, or for the end.
    arrived: std::sync::Condvar,
    /// Written in order: held while lines are written out.
    out: std::sync::Mutex<W>,
}

#[derive(Default)]
struct LinesState {
    waiting: Vec<u8>,
    closing: bool,
}

/// The shortest time between two writes of [`Lines`] (lines gather
/// meanwhile).
pub const LINES_DELAY: std::time::Duration = std::time::Duration::from_millis(10);

/// Bytes of log lines waiting past which an event's writer writes them
/// out itself.
pub const LINES_LIMIT: usize = 1 << 20;

impl<W: io::Write + Send + 'static> Lines<W> {
    /// Starts the `log-writer` thread writing to `out`. If the thread
    /// cannot start, every line is written at once.
    pub fn start(out: W) -> Lines<W> {
        let shared = std::sync::Arc::new(LinesShared {
            state: std::sync::Mutex::new(LinesState::default()),
            arrived: std::sync::Condvar::new(),
            out: std::sync::Mutex::new(out),
        });
        let writer = shared.clone();
        let thread = std::thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || writer.run());
        if thread.is_err() {
            shared.state().closing = true;
        }
        Lines(shared, thread.ok())
    }

    /// A writer of lines, for [`MakeWriter`].
    pub fn writer(&self) -> LinesWriter<W> {
        LinesWriter(self.0.clone())
    }
}

impl<W: io::Write + Send + 'static> Drop for Lines<W> {
    fn drop(&mut self) {
        self.0.state().closing = true;
        self.0.arrived.notify_all();
        if let Some(thread) = self.1.take() {
            let _ = thread.join();
        }
        self.0.write_out();
    }
}

impl<W: io::Write> LinesShared<W> {
    fn state(&self) -> std::sync::MutexGuard<'_, LinesState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes out every line waiting, now.
    fn write_out(&self) {
        let mut out = self
            .out
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let lines = std::mem::take(&mut self.state().waiting);
        write_lines(&mut *out, &lines);
    }

    /// [`write_out`](Self::write_out), unless lines are being written
    /// right now (by this thread, if it panicked doing so, or by one stuck
    /// on a full stderr): a panic's message never waits for them.
    fn write_out_unless_busy(&self) {
        if let Ok(mut out) = self.out.try_lock()
            && let Ok(mut state) = self.state.try_lock()
        {
            let lines = std::mem::take(&mut state.waiting);
            drop(state);
            write_lines(&mut *out, &lines);
        }
    }

    /// Appends `line`: the writer thread is told if it is the first one
    /// waiting; past [`LINES_LIMIT`], or once closing, written at once.
    fn append(&self, line: &[u8]) {
        let mut state = self.state();
        let first = state.waiting.is_empty();
        state.waiting.extend_from_slice(line);
        let now = state.closing || state.waiting.len() >= LINES_LIMIT;
        drop(state);
        if now {
            self.write_out();
        } else if first {
            self.arrived.notify_one();
        }
    }

    fn run(&self) {
        let mut written: Option<std::time::Instant> = None;
        loop {
            {
                let mut state = self.state();
                while state.waiting.is_empty() && !state.closing {
                    state = self
                        .arrived
                        .wait(state)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
                if state.closing {
                    return;
                }
            }
            // At once after a quiet spell; else lines gather until
            // [`LINES_DELAY`] after the last write.
            if let Some(wait) = written.and_then(|w| LINES_DELAY.checked_sub(w.elapsed())) {
                std::thread::sleep(wait);
            }
            self.write_out();
            written = Some(std::time::Instant::now());
        }
    }
}

/// Writes `lines` to `out` (nowhere to report a failing stderr).
fn write_lines(out: &mut impl io::Write, lines: &[u8]) {
    if !lines.is_empty() {
        let _ = out.write_all(lines);
        let _ = out.flush();
    }
}

/// Appends each write to [`Lines`] (an event's line is one write).
pub struct LinesWriter<W>(std::sync::Arc<LinesShared<W>>);

impl<W: io::Write> io::Write for LinesWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// stderr, through [`Lines`] when the log is buffered.
#[derive(Clone)]
pub struct ToStderr(Option<std::sync::Arc<LinesShared<io::Stderr>>>);

/// A writer [`ToStderr`] makes for each event: through [`Lines`], or
/// straight to stderr.
pub type StderrWriter = EitherWriter<LinesWriter<io::Stderr>, io::StderrLock<'static>>;

impl<'a> MakeWriter<'a> for ToStderr {
    type Writer = StderrWriter;

    fn make_writer(&'a self) -> Self::Writer {
        match &self.0 {
            Some(shared) => EitherWriter::A(LinesWriter(shared.clone())),
            None => EitherWriter::B(io::stderr().lock()),
        }
    }
}

/// The span every HTTP request runs in (see the module documentation);
/// `principal`, `flow` and `workflow` are recorded later, where known.
///
/// The client is given when the span is made: each later `record` costs the
/// text and JSON layers a formatting pass of its own (about a microsecond a
/// request each, BENCHMARKS.md, issue 13).
pub fn request_span(id: RequestId, client: Option<std::net::IpAddr>) -> tracing::Span {
    tracing::info_span!(
        "request",
        request_id = %id,
        client = client.map(tracing::field::display),
        principal = tracing::field::Empty,
        flow = tracing::field::Empty,
        workflow = tracing::field::Empty,
    )
}

/// A request's id: unique within the process, and across restarts and
/// gateways with high probability (a random 32-bit prefix per process, then
/// a counter). Shown as 16 hex digits, in the log and as `X-Request-Id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestId(pub u64);

impl RequestId {
    /// The next id.
    pub fn next() -> RequestId {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let prefix = *PREFIX.get_or_init(|| {
            let mut b = [0u8; 4];
            let _ = getrandom::fill(&mut b);
            u64::from(u32::from_be_bytes(b)) << 32
        });
        RequestId(prefix | (NEXT.fetch_add(1, Ordering::Relaxed) & 0xffff_ffff))
    }

    /// The id as 16 lowercase hex digits, without allocating.
    pub fn hex(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            let nibble = (self.0 >> (60 - 4 * i)) & 0xf;
            *b = b"0123456789abcdef"[nibble as usize];
        }
        out
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// An operator did something through the admin API or CLI: logged at
/// `info` with the operator's name, role, the action (`lockout.clear`,
/// `workflows.reload`, ...) and its subject (a user name, a workflow),
/// never a secret. The audit log keeps the same action durably.
pub fn operator_action(operator: &str, role: &str, action: &str, subject: Option<&str>) {
    tracing::info!(
        target: "resetgate::operator",
        operator,
        role,
        action,
        subject,
        "operator action"
    );
}

/// An operator cleared a user's lockout (after the directory's `unlock`).
pub fn lockout_cleared(operator: &str, user: &str, directory_unlocked: bool) {
    tracing::warn!(
        target: "resetgate::operator",
        operator,
        user,
        directory_unlocked,
        "lockout cleared"
    );
}

/// stderr, with every line break inside an event written as `\n` (and a
/// carriage return as `\r`): the text format writes each event with one
/// `write_all`, which ends with the event's only real line break.
#[derive(Clone)]
pub struct OneLine(ToStderr);

/// The writer [`OneLine`] makes for each event.
pub struct OneLineWriter<W>(W);

impl<'a> MakeWriter<'a> for OneLine {
    type Writer = OneLineWriter<StderrWriter>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter(self.0.make_writer())
    }
}

impl<W: io::Write> io::Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if !body.iter().any(|b| *b == b'\n' || *b == b'\r') {
            return self.0.write(buf);
        }
        let mut line = Vec::with_capacity(buf.len() + 8);
        for b in body {
            match b {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                b => line.push(*b),
            }
        }
        if body.len() < buf.len() {
            line.push(b'\n');
        }
        self.0.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Span fields as a JSON fragment (`,"name":value` per field), which
/// [`JsonLines`] merges into the event's object.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonFields;

impl<'w> FormatFields<'w> for JsonFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: Writer<'w>,
        fields: R,
    ) -> fmt::Result {
        let mut map = Map::new();
        fields.record(&mut JsonVisitor(&mut map));
        for (k, v) in map {
            write!(writer, ",{}:{v}", Value::String(k))?;
        }
        Ok(())
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        self.format_fields(current.as_writer(), fields)
    }
}

/// One JSON object per event: `timestamp` (RFC 3339, UTC), `level`,
/// `target`, `event`, the fields of the spans it happened in (outermost
/// first), then its own fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let ext = span.extensions();
                let Some(f) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                let Some(fragment) = f.fields.strip_prefix(',') else {
                    continue;
                };
                if let Ok(Value::Object(span_fields)) =
                    serde_json::from_str::<Value>(&format!("{{{fragment}}}"))
                {
                    fields.extend(span_fields);
                }
            }
        }
        let mut own = Map::new();
        event.record(&mut JsonVisitor(&mut own));
        let message = own
            .remove("message")
            .unwrap_or(Value::String(String::new()));
        fields.extend(own);

        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();
        let head = [
            ("timestamp", Value::String(timestamp)),
            ("level", Value::String(meta.level().to_string())),
            ("target", Value::String(meta.target().to_owned())),
            ("event", message),
        ];
        writer.write_char('{')?;
        let mut first = true;
        let rest = fields
            .into_iter()
            .filter(|(k, _)| !matches!(k.as_str(), "timestamp" | "level" | "target" | "event"));
        for (k, v) in head.into_iter().map(|(k, v)| (k.to_owned(), v)).chain(rest) {
            if !first {
                writer.write_char(',')?;
            }
            first = false;
            write!(writer, "{}:{v}", Value::String(k))?;
        }
        writer.write_str("}\n")
    }
}

/// Records an event's or a span's fields as JSON values.
struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_string()));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Write as _;

    #[test]
    fn a_text_event_with_line_breaks_is_one_line() {
        let mut out = Vec::new();
        let mut w = OneLineWriter(&mut out);
        w.write_all(b"a: trap\nwasm backtrace:\r\n  0: f\n")
            .unwrap();
        w.write_all(b"plain\n").unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a: trap\\nwasm backtrace:\\r\\n  0: f\nplain\n"
        );
    }

    /// Every line written through [`Lines`] from several threads arrives
    /// whole and in each thread's order; all of them once it is dropped.
    #[test]
    fn buffered_lines_arrive_whole_and_in_order() {
        let sink = Buffer::default();
        let lines = Lines::start(sink.clone());
        std::thread::scope(|s| {
            for t in 0..4 {
                let mut w = lines.writer();
                s.spawn(move || {
                    for i in 0..500 {
                        w.write_all(format!("thread {t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                });
            }
        });
        drop(lines);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let mut next = [0; 4];
        for line in text.lines() {
            let words: Vec<&str> = line.split(' ').collect();
            let (t, i): (usize, usize) = (words[1].parse().unwrap(), words[3].parse().unwrap());
            assert_eq!(i, next[t], "{line}");
            next[t] += 1;
        }
        assert_eq!(next, [500; 4]);
    }

    /// A line is written soon without more lines or the end coming, and
    /// past the limit a writer writes what waits itself.
    #[test]
    fn a_buffered_line_is_written_soon_and_a_full_buffer_at_once() {
        let sink = Buffer::default();
        let lines = Lines::start(sink.clone());
        lines.writer().write_all(b"listening\n").unwrap();
        let started = std::time::Instant::now();
        while sink.0.lock().unwrap().is_empty() {
            assert!(started.elapsed() < std::time::Duration::from_secs(5));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(&sink.0.lock().unwrap()[..], b"listening\n");
        let big = vec![b'x'; LINES_LIMIT];
        lines.writer().write_all(&big).unwrap();
        assert_eq!(sink.0.lock().unwrap().len(), 10 + LINES_LIMIT);
    }

    /// A writer into a shared buffer, for a subscriber under test.
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `f` logs as JSON lines.
    fn json_log(f: impl FnOnce()) -> String {
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .fmt_fields(JsonFields)
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn a_json_line_holds_the_request_fields_and_the_events_own() {
        let text = json_log(|| {
            let span = request_span(RequestId(0xab), "10.0.0.1".parse().ok());
            span.record("principal", "portal-a");
            span.record("workflow", "reset");
            span.in_scope(|| {
                tracing::info!(
                    workflow = "other",
                    outcome = "completed",
                    n = 3u64,
                    "flow ended\nforged"
                );
            });
            tracing::warn!("outside");
        });
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let e = &lines[0];
        assert_eq!(e["event"], "flow ended\nforged");
        assert_eq!(e["level"], "INFO");
        assert_eq!(e["request_id"], "00000000000000ab");
        assert_eq!(e["client"], "10.0.0.1");
        assert_eq!(e["principal"], "portal-a");
        assert_eq!(e["workflow"], "other", "the event's own field wins");
        assert_eq!(e["outcome"], "completed");
        assert_eq!(e["n"], 3);
        assert!(e["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(text.starts_with("{\"timestamp\":"), "{text}");
        assert!(lines[1].get("request_id").is_none(), "{text}");
    }

    #[test]
    fn a_request_without_a_known_client_has_no_client_field() {
        let text = json_log(|| {
            request_span(RequestId(0xcd), None).in_scope(|| tracing::info!("inside"));
        });
        let line: Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["request_id"], "00000000000000cd", "{text}");
        assert!(line.get("client").is_none(), "{text}");
    }

    #[test]
    fn request_ids_are_distinct_and_sixteen_hex_digits() {
        let (a, b) = (RequestId::next(), RequestId::next());
        assert_ne!(a, b);
        assert_eq!(a.to_string().len(), 16);
        assert_eq!(
            a.hex(),
            <[u8; 16]>::try_from(a.to_string().as_bytes()).unwrap()
        );
    }
}
