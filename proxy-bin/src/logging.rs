//! Logging: the application log on stderr (tracing's fmt, `RUST_LOG`-style filter), and the
//! access log on stdout in combined or JSON format, fed by the core's `access` events.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use proxy_core::access_log::ACCESS_TARGET;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, filter};

use crate::config::{AccessLogFormat, LogConfig};

/// Installs the global subscriber. `RUST_LOG` overrides the configured level.
pub fn init(config: &LogConfig) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .map_err(|e| anyhow::anyhow!("invalid log level `{}`: {e}", config.level))?;
    let app = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter::filter_fn(|m| m.target() != ACCESS_TARGET))
        .with_filter(filter);
    let access = (config.access_log != AccessLogFormat::Off).then(|| {
        AccessLog {
            format: config.access_log,
        }
        .with_filter(filter::filter_fn(|m| m.target() == ACCESS_TARGET))
    });
    tracing_subscriber::registry()
        .with(app)
        .with(access)
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// Writes one line per `access` event.
struct AccessLog {
    format: AccessLogFormat,
}

#[derive(Default)]
struct Fields(Vec<(&'static str, FieldValue)>);

enum FieldValue {
    Str(String),
    U64(u64),
    F64(f64),
    Bool(bool),
}

impl Fields {
    fn get(&self, name: &str) -> Option<&FieldValue> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn text(&self, name: &str) -> String {
        match self.get(name) {
            Some(FieldValue::Str(s)) => s.clone(),
            Some(FieldValue::U64(n)) => n.to_string(),
            Some(FieldValue::F64(f)) => format!("{:.3}", f / 1e3),
            Some(FieldValue::Bool(b)) => b.to_string(),
            None => "-".to_owned(),
        }
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .push((field.name(), FieldValue::Str(value.to_owned())));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), FieldValue::U64(value)));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0
            .push((field.name(), FieldValue::Str(value.to_string())));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.push((field.name(), FieldValue::F64(value)));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name(), FieldValue::Bool(value)));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .push((field.name(), FieldValue::Str(format!("{value:?}"))));
    }
}

impl<S: Subscriber> Layer<S> for AccessLog {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = match self.format {
            AccessLogFormat::Json => json_line(&fields),
            _ => combined_line(&fields),
        };
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
    }
}

/// nginx's combined format, then request id, upstream, attempts and times in seconds:
/// `ip - - [time] "GET /x HTTP/1.1" 200 512 "referer" "agent" rid=.. up=.. tries=1 rt=0.002 urt=0.001`,
/// plus `cache=hit|miss|...` on cached routes and `err=..` when the proxy answered itself.
fn combined_line(f: &Fields) -> String {
    let mut s = String::with_capacity(256);
    let version = f.text("version");
    let _ = writeln!(
        s,
        "{} - - [{}] \"{} {} {}\" {} {} \"{}\" \"{}\" rid={} up={} tries={} rt={} urt={}{}{}",
        f.text("remote_addr"),
        clf_time(SystemTime::now()),
        f.text("method"),
        f.text("uri"),
        version,
        f.text("status"),
        f.text("bytes"),
        f.text("referer"),
        f.text("user_agent"),
        f.text("request_id"),
        f.text("upstream"),
        f.text("attempts"),
        f.text("duration_ms"),
        f.text("upstream_ms"),
        match f.get("cache") {
            Some(FieldValue::Str(c)) => format!(" cache={c}"),
            _ => String::new(),
        },
        match f.get("error") {
            Some(FieldValue::Str(e)) => format!(" err={e}"),
            _ => String::new(),
        },
    );
    s
}

fn json_line(f: &Fields) -> String {
    let mut map = serde_json::Map::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    map.insert("time".into(), serde_json::json!(now));
    for (name, value) in &f.0 {
        let v = match value {
            FieldValue::Str(s) => serde_json::Value::from(s.as_str()),
            FieldValue::U64(n) => serde_json::Value::from(*n),
            FieldValue::F64(x) => serde_json::Value::from(*x),
            FieldValue::Bool(b) => serde_json::Value::from(*b),
        };
        map.insert((*name).to_owned(), v);
    }
    let mut line = serde_json::Value::Object(map).to_string();
    line.push('\n');
    line
}

/// Common Log Format time in UTC: `26/Nov/2026:17:38:50 +0000`.
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        d,
        MONTHS[(m - 1) as usize],
        y,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn clf_time_formats_utc() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_714_730); // 2026-11-26T17:38:50Z
        assert_eq!(clf_time(t), "26/Nov/2026:17:38:50 +0000");
        assert_eq!(clf_time(UNIX_EPOCH), "01/Jan/1970:00:00:00 +0000");
    }

    #[test]
    fn combined_line_shape() {
        let f = Fields(vec![
            ("remote_addr", FieldValue::Str("10.0.0.1".into())),
            ("method", FieldValue::Str("GET".into())),
            ("uri", FieldValue::Str("/x".into())),
            ("version", FieldValue::Str("HTTP/1.1".into())),
            ("status", FieldValue::U64(200)),
            ("bytes", FieldValue::U64(12)),
            ("duration_ms", FieldValue::F64(2.0)),
        ]);
        let line = combined_line(&f);
        assert!(line.starts_with("10.0.0.1 - - ["), "{line}");
        assert!(
            line.contains(
                "] \"GET /x HTTP/1.1\" 200 12 \"-\" \"-\" rid=- up=- tries=- rt=0.002 urt=-\n"
            ),
            "{line}"
        );
        let json = json_line(&f);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["status"], 200);
    }
}
