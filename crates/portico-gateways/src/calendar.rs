//! The `calendar` gateway: events on a schedule.
//!
//! Its configuration, what its events carry and how it acknowledges its sources: [`CalendarConfig`].
//!
//! Time is read through a [`Clock`], so the schedule logic is tested with a manual clock
//! instead of by waiting. Times are computed in the configured zone, so daylight-saving
//! changes are handled the way cron users expect: a time skipped by a spring-forward gap runs
//! at the first valid time after it; a time repeated by a fall-back runs once.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use portico::{ConfigContext, ConfigError, ConfigExecutor, DispatchError, Event, RejectReason};
use schemars::JsonSchema;
use serde::Deserialize;

/// A source of time: the system clock, or a manual one in tests.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
    /// Resolves at `deadline` (or soon after).
    fn sleep_until(&self, deadline: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            // A timer runs on the monotonic clock: when the wall clock jumps (set by NTP, the
            // machine resumed from suspend), the time left is computed again.
            let mut jumps = wall_clock_jumps();
            loop {
                let left = deadline - Utc::now();
                let Ok(left) = left.to_std() else { return };
                if left.is_zero() {
                    return;
                }
                let left = left.min(LONGEST_SLEEP);
                tokio::select! {
                    _ = tokio::time::sleep(left) => {}
                    changed = jumps.changed() => {
                        // The sender lives as long as the process; should it ever be gone,
                        // sleep as if nothing had jumped.
                        if changed.is_err() {
                            tokio::time::sleep(left).await;
                        }
                    }
                }
            }
        })
    }
}

/// The longest one timer of [`SystemClock::sleep_until`] is set for.
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

/// How often the wall clock is compared with the monotonic clock.
const CLOCK_CHECK: Duration = Duration::from_secs(10);

/// A change each time the wall clock jumps by more than a second against the monotonic one.
/// One thread of the process compares them every [`CLOCK_CHECK`], so that a waiting
/// configuration costs a timer and no periodic wake-up (100,000 of them waking every minute
/// took 1.5 % of a core), and still fires at most [`CLOCK_CHECK`] late after a jump.
fn wall_clock_jumps() -> tokio::sync::watch::Receiver<()> {
    static JUMPS: std::sync::OnceLock<tokio::sync::watch::Sender<()>> = std::sync::OnceLock::new();
    JUMPS
        .get_or_init(|| {
            let (tx, _) = tokio::sync::watch::channel(());
            let sender = tx.clone();
            let checker = std::thread::Builder::new()
                .name("portico-clock".into())
                .spawn(move || {
                    let mut wall = Utc::now();
                    let mut mono = std::time::Instant::now();
                    loop {
                        std::thread::sleep(CLOCK_CHECK);
                        let (w, m) = (Utc::now(), std::time::Instant::now());
                        let walked = (w - wall).num_milliseconds();
                        let ran = m.duration_since(mono).as_millis() as i64;
                        if (walked - ran).abs() > 1000 {
                            tracing::info!(
                                by_ms = walked - ran,
                                "the wall clock jumped: calendar schedules are computed again"
                            );
                            sender.send_replace(());
                        }
                        (wall, mono) = (w, m);
                    }
                });
            if let Err(e) = checker {
                tracing::warn!(
                    "cannot start the wall-clock checker ({e}): a calendar tick may be late by as much as the clock jumps"
                );
            }
            tx
        })
        .subscribe()
}

/// A `calendar` configuration: a `schedule` or an `interval`.
///
/// Payload: `{"eventTime": "<RFC 3339>", "userPayload": …}` as `application/json`, where
/// `eventTime` is the time the tick was scheduled for (also the event's `time`). The event's
/// `id` is the configuration's key and that time (`nightly@2026-01-02T03:00:00Z`): one tick has
/// one id wherever and however often it is sent, so a watcher can drop a tick it already has.
///
/// An `interval` ticks at `anchor + k × interval`, counted from the Unix epoch unless the
/// configuration names an `anchor`: every process that runs the configuration computes the
/// same times (`interval: 1h` ticks on the hour, UTC), and a restart does not shift them.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CalendarConfig {
    /// A cron expression: 5 fields (minute hour day month weekday), 6 with seconds first, or
    /// `@hourly`, `@daily`, ….
    #[serde(default)]
    pub schedule: Option<String>,
    /// A fixed period instead of `schedule`: `10s`, `5m`, `1h30m`.
    #[serde(default)]
    pub interval: Option<String>,
    /// With `interval`: the instant (RFC 3339) its ticks are counted from (default the Unix
    /// epoch, `1970-01-01T00:00:00Z`).
    #[serde(default)]
    pub anchor: Option<String>,
    /// The IANA time zone the schedule and date-only exclusions are read in (default UTC).
    #[serde(default)]
    pub timezone: Option<String>,
    /// Dates (`2026-12-25`, the whole day) or instants (RFC 3339) to skip.
    #[serde(default)]
    pub exclusion_dates: Vec<String>,
    /// RFC 5545 lines; `EXDATE:` and `EXDATE;TZID=…:` lines add exclusions.
    #[serde(default)]
    pub recurrence: Vec<String>,
    /// Any JSON, copied into every event as `userPayload`.
    #[serde(default)]
    pub user_payload: Option<serde_json::Value>,
    /// When the gateway's replicas share configurations: how far back a replica that takes
    /// this configuration over fires the ticks that fell due while no replica ran it (default
    /// `1h`; `0s` fires none). Older ones are counted as missed. A tick fired once is never
    /// fired again by the next replica, which goes on from the last one fired.
    #[serde(default)]
    pub catch_up: Option<String>,
}

impl CalendarConfig {
    /// Checks the configuration and builds its schedule; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let catch_up = match self.catch_up.as_deref().map(str::trim) {
            None => DEFAULT_CATCH_UP,
            Some(t) => humantime::parse_duration(t).map_err(|e| {
                invalid(
                    "catchUp",
                    format!("`{t}` is not a duration like `10m` or `1h`: {e}"),
                )
            })?,
        };
        Ok(Settings {
            schedule: Schedule::parse(&self)?,
            user_payload: self.user_payload.unwrap_or(serde_json::Value::Null),
            catch_up,
        })
    }
}

/// How far back ticks missed while no replica ran a configuration are fired.
const DEFAULT_CATCH_UP: Duration = Duration::from_secs(3600);

/// A checked `calendar` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    schedule: Schedule,
    user_payload: serde_json::Value,
    catch_up: Duration,
}

#[derive(Debug, Clone)]
enum Rule {
    Cron(Box<Cron>),
    Every(Duration),
}

/// A parsed, checked schedule: when the next events are due.
#[derive(Debug, Clone)]
pub struct Schedule {
    rule: Rule,
    /// Where an interval's ticks are counted from.
    anchor: DateTime<Utc>,
    tz: Tz,
    excluded_days: Vec<NaiveDate>,
    excluded_instants: Vec<DateTime<Utc>>,
}

fn invalid(field: &str, what: impl std::fmt::Display) -> ConfigError {
    ConfigError::invalid(format!("{field}: {what}"))
}

impl Schedule {
    /// Checks `config` and builds its schedule; errors name the field.
    pub fn parse(config: &CalendarConfig) -> Result<Schedule, ConfigError> {
        let tz: Tz = match config.timezone.as_deref().map(str::trim) {
            None | Some("") => Tz::UTC,
            Some(name) => name.parse().map_err(|_| {
                invalid(
                    "timezone",
                    format!("`{name}` is not an IANA time zone (like `Europe/Paris`)"),
                )
            })?,
        };
        let rule = match (&config.schedule, &config.interval) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    "schedule and interval are both set: give one",
                ));
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    "expected `schedule` (cron) or `interval` (like `10s`)",
                ));
            }
            (Some(expr), None) => {
                let parser = CronParser::builder().seconds(Seconds::Optional).build();
                let fields = expr.split_whitespace().count();
                if !expr.trim().starts_with('@') && !(5..=6).contains(&fields) {
                    return Err(invalid(
                        "schedule",
                        format!(
                            "`{expr}` has {fields} fields: expected 5 (minute hour day month weekday), 6 (seconds first) or a nickname like @hourly"
                        ),
                    ));
                }
                let cron = parser.parse(expr).map_err(|e| {
                    invalid(
                        "schedule",
                        format!("`{expr}` is not a valid cron expression: {e}"),
                    )
                })?;
                Rule::Cron(Box::new(cron))
            }
            (None, Some(text)) => {
                let d = humantime::parse_duration(text.trim()).map_err(|e| {
                    invalid(
                        "interval",
                        format!("`{text}` is not a duration like `10s` or `5m`: {e}"),
                    )
                })?;
                if d < Duration::from_millis(10) {
                    return Err(invalid(
                        "interval",
                        format!("`{text}` is shorter than 10ms"),
                    ));
                }
                Rule::Every(d)
            }
        };
        let anchor = match config.anchor.as_deref().map(str::trim) {
            None | Some("") => DateTime::<Utc>::UNIX_EPOCH,
            Some(_) if matches!(rule, Rule::Cron(_)) => {
                return Err(invalid(
                    "anchor",
                    "only for an `interval` (a cron schedule names its own times)",
                ));
            }
            Some(text) => DateTime::parse_from_rfc3339(text)
                .map_err(|e| {
                    invalid(
                        "anchor",
                        format!(
                            "`{text}` is not an RFC 3339 time like `2026-01-01T00:00:00Z`: {e}"
                        ),
                    )
                })?
                .with_timezone(&Utc),
        };
        let mut s = Schedule {
            rule,
            anchor,
            tz,
            excluded_days: Vec::new(),
            excluded_instants: Vec::new(),
        };
        for (i, d) in config.exclusion_dates.iter().enumerate() {
            s.add_exclusion(d, tz)
                .map_err(|e| invalid(&format!("exclusionDates[{i}]"), e))?;
        }
        for (i, line) in config.recurrence.iter().enumerate() {
            s.add_recurrence_line(line)
                .map_err(|e| invalid(&format!("recurrence[{i}]"), e))?;
        }
        Ok(s)
    }

    fn add_exclusion(&mut self, text: &str, tz: Tz) -> Result<(), String> {
        let t = text.trim();
        if let Ok(day) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
            self.excluded_days.push(day);
            return Ok(());
        }
        if let Ok(at) = DateTime::parse_from_rfc3339(t) {
            self.excluded_instants.push(at.with_timezone(&Utc));
            return Ok(());
        }
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S") {
            let at = local(tz, naive)
                .ok_or_else(|| format!("`{t}` does not exist in {tz} (a daylight-saving gap)"))?;
            self.excluded_instants.push(at);
            return Ok(());
        }
        Err(format!(
            "`{t}` is not a date (2026-12-25) or a time (2026-12-25T08:00:00Z)"
        ))
    }

    fn add_recurrence_line(&mut self, line: &str) -> Result<(), String> {
        let line = line.trim();
        let Some((head, values)) = line.split_once(':') else {
            return Err(format!(
                "`{line}` is not an RFC 5545 line (NAME[;PARAMS]:VALUE)"
            ));
        };
        let mut parts = head.split(';');
        let name = parts.next().unwrap_or_default().to_ascii_uppercase();
        if name != "EXDATE" {
            // RRULE, RDATE, …: the schedule itself comes from `schedule`/`interval`.
            return Err(format!(
                "`{name}` lines are not supported: only EXDATE (use `schedule` for the rule)"
            ));
        }
        let mut tz = self.tz;
        let mut date_only = false;
        for p in parts {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            match k.to_ascii_uppercase().as_str() {
                "TZID" => {
                    tz = v
                        .parse()
                        .map_err(|_| format!("TZID `{v}` is not an IANA time zone"))?
                }
                "VALUE" if v.eq_ignore_ascii_case("DATE") => date_only = true,
                _ => {}
            }
        }
        for v in values.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            if date_only || v.len() == 8 {
                let day = NaiveDate::parse_from_str(v, "%Y%m%d")
                    .map_err(|_| format!("`{v}` is not a date like 20261225"))?;
                self.excluded_days.push(day);
            } else if let Some(utc) = v.strip_suffix('Z') {
                let naive = NaiveDateTime::parse_from_str(utc, "%Y%m%dT%H%M%S")
                    .map_err(|_| format!("`{v}` is not a time like 20261225T080000Z"))?;
                self.excluded_instants.push(Utc.from_utc_datetime(&naive));
            } else {
                let naive = NaiveDateTime::parse_from_str(v, "%Y%m%dT%H%M%S")
                    .map_err(|_| format!("`{v}` is not a time like 20261225T080000"))?;
                let at = local(tz, naive).ok_or_else(|| {
                    format!("`{v}` does not exist in {tz} (a daylight-saving gap)")
                })?;
                self.excluded_instants.push(at);
            }
        }
        Ok(())
    }

    fn excluded(&self, t: DateTime<Utc>) -> bool {
        self.excluded_instants.contains(&t)
            || self
                .excluded_days
                .contains(&t.with_timezone(&self.tz).date_naive())
    }

    /// The first due time strictly after `after`, skipping exclusions (an interval ticks at
    /// `anchor + k × interval`).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = self.anchor;
        let mut t = after;
        // Bounded: exclusions are finite, so a few thousand steps always get past them.
        for _ in 0..100_000 {
            let next = match &self.rule {
                Rule::Cron(cron) => cron
                    .find_next_occurrence(&t.with_timezone(&self.tz), false)
                    .ok()?
                    .with_timezone(&Utc),
                Rule::Every(d) => {
                    let step = i64::try_from(d.as_nanos()).ok()?;
                    let elapsed = (t - start).num_nanoseconds()?;
                    // The first tick after `t`: floor division, so that an anchor in the future
                    // counts back to the ticks before it.
                    let n = elapsed.div_euclid(step);
                    start + chrono::Duration::nanoseconds(step.checked_mul(n.checked_add(1)?)?)
                }
            };
            if !self.excluded(next) {
                return Some(next);
            }
            t = next;
        }
        None
    }
}

fn local(tz: Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    tz.from_local_datetime(&naive)
        .earliest()
        .map(|t| t.with_timezone(&Utc))
}

/// The calendar executor.
#[derive(Clone)]
pub struct Calendar {
    clock: Arc<dyn Clock>,
}

impl Default for Calendar {
    fn default() -> Self {
        Calendar {
            clock: Arc::new(SystemClock),
        }
    }
}

impl Calendar {
    /// A calendar reading time from `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Calendar {
        Calendar { clock }
    }
}

impl ConfigExecutor for Calendar {
    type Config = Settings;

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        ctx.parse::<CalendarConfig>()?.check()
    }

    async fn start_config(&self, ctx: ConfigContext, c: Settings) -> Result<(), ConfigError> {
        let Settings {
            schedule,
            user_payload,
            catch_up,
        } = c;
        let started = self.clock.now();
        let mut last = resume_from(&ctx, &schedule, started, catch_up);
        ctx.running();
        loop {
            let Some(due) = schedule.next_after(last) else {
                tracing::info!("the schedule has no further occurrence");
                return Ok(());
            };
            tokio::select! {
                _ = ctx.stopped() => return Ok(()),
                _ = self.clock.sleep_until(due) => {}
            }
            let at = due.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
            let id = format!("{}@{at}", ctx.src());
            let payload = serde_json::json!({
                "eventTime": at,
                "userPayload": user_payload,
            });
            let event = Event::json(&payload)?.with_time(due).with_id(id);
            // Boxed: the hand-over's state (filter, rate limit, outbox append) is large and
            // lives only while a tick is handed over; held inline, every waiting
            // configuration would carry it.
            match Box::pin(ctx.dispatch(event)).await {
                Ok(()) => {}
                // atMostOnce: a full gateway refuses the tick at once (counted as
                // `portico_events_rejected_total{reason="full"}`); the schedule goes on.
                Err(DispatchError::Full { .. }) => {
                    tracing::warn!(tick = %due, "calendar tick dropped: the gateway is full");
                }
                Err(DispatchError::Stopped) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            ctx.set_checkpoint(at);
            // Of the ticks that fell due while this one was handed over (it waited for room,
            // or the clock jumped), the latest fires next, late; those before it are missed,
            // not queued. Ticks due before the configuration started here are being caught
            // up: they all fire.
            let now = self.clock.now();
            let mut missed = 0u64;
            last = due;
            while let Some(next) = schedule.next_after(last) {
                if next > now || next <= started || missed >= 1_000_000 {
                    break;
                }
                match schedule.next_after(next) {
                    Some(later) if later <= now => {
                        missed += 1;
                        last = next;
                    }
                    _ => break,
                }
            }
            if missed > 0 {
                ctx.count_rejected(RejectReason::Missed, missed);
                tracing::warn!(
                    missed,
                    "calendar ticks missed: they fell due while an earlier tick waited for room (or the clock jumped); the latest fires late (counted in portico_events_rejected_total{{reason=\"missed\"}})"
                );
            }
        }
    }
}

/// Where a configuration's schedule starts: now, or, when a replica ran it before
/// ([`ConfigContext::checkpoint`]), the last tick fired there, so that the ticks that fell due
/// since fire now; those older than `catch_up` are counted as missed.
fn resume_from(
    ctx: &ConfigContext,
    schedule: &Schedule,
    now: DateTime<Utc>,
    catch_up: Duration,
) -> DateTime<Utc> {
    let Some(fired) = ctx
        .checkpoint()
        .and_then(|c| DateTime::parse_from_rfc3339(&c).ok())
        .map(|t| t.with_timezone(&Utc))
        .filter(|t| *t < now)
    else {
        return now;
    };
    let floor = now - chrono::Duration::from_std(catch_up).unwrap_or(chrono::Duration::MAX);
    if fired >= floor {
        return fired;
    }
    let mut missed = 0u64;
    let mut last = fired;
    while let Some(next) = schedule.next_after(last) {
        if next > floor || missed >= 1_000_000 {
            break;
        }
        missed += 1;
        last = next;
    }
    if missed > 0 {
        ctx.count_rejected(RejectReason::Missed, missed);
        tracing::warn!(
            missed,
            catch_up = %humantime::format_duration(catch_up),
            "calendar ticks missed while no replica ran the configuration, older than catchUp (counted in portico_events_rejected_total{{reason=\"missed\"}})"
        );
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> CalendarConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next_n(s: &Schedule, start: &str, n: usize) -> Vec<String> {
        let mut t = utc(start);
        (0..n)
            .map(|_| {
                t = s.next_after(t).unwrap();
                t.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn five_six_fields_and_nicknames() {
        let s = Schedule::parse(&cfg("schedule: '*/15 * * * *'")).unwrap();
        assert_eq!(
            next_n(&s, "2026-01-01T10:07:00Z", 2),
            ["2026-01-01T10:15:00+00:00", "2026-01-01T10:30:00+00:00"]
        );
        let s = Schedule::parse(&cfg("schedule: '*/20 * * * * *'")).unwrap();
        assert_eq!(
            next_n(&s, "2026-01-01T10:07:00Z", 2),
            ["2026-01-01T10:07:20+00:00", "2026-01-01T10:07:40+00:00"]
        );
        let s = Schedule::parse(&cfg("schedule: '@hourly'")).unwrap();
        assert_eq!(
            next_n(&s, "2026-01-01T10:07:00Z", 1),
            ["2026-01-01T11:00:00+00:00"]
        );
    }

    #[test]
    fn interval_ticks_are_counted_from_the_epoch_or_the_anchor() {
        let s = Schedule::parse(&cfg("interval: 90s")).unwrap();
        // 2026-01-01T00:00:00Z is 1767225600 s after the epoch, a multiple of 90 s.
        assert_eq!(
            next_n(&s, "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-01T00:01:30+00:00",
                "2026-01-01T00:03:00+00:00",
                "2026-01-01T00:04:30+00:00"
            ]
        );
        // Whenever it is asked (a start, a restart, another replica), the same times.
        assert_eq!(
            s.next_after(utc("2026-01-01T00:02:00Z")).unwrap(),
            utc("2026-01-01T00:03:00Z")
        );
        assert_eq!(
            next_n(&s, "2026-01-01T00:00:01Z", 1),
            ["2026-01-01T00:01:30+00:00"]
        );
        // An hour ticks on the hour.
        let s = Schedule::parse(&cfg("interval: 1h")).unwrap();
        assert_eq!(
            next_n(&s, "2026-03-04T05:06:07Z", 1),
            ["2026-03-04T06:00:00+00:00"]
        );
        // An anchor, in the past or the future, shifts them.
        let s = Schedule::parse(&cfg("interval: 1h\nanchor: '2030-01-01T00:20:00Z'")).unwrap();
        assert_eq!(
            next_n(&s, "2026-03-04T05:06:07Z", 2),
            ["2026-03-04T05:20:00+00:00", "2026-03-04T06:20:00+00:00"]
        );
        let e = Schedule::parse(&cfg("interval: 1h\nanchor: soon")).unwrap_err();
        assert!(e.message().starts_with("anchor:"), "{e}");
        let e = Schedule::parse(&cfg("schedule: '@hourly'\nanchor: '2030-01-01T00:00:00Z'"))
            .unwrap_err();
        assert!(e.message().starts_with("anchor:"), "{e}");
    }

    #[test]
    fn timezone_is_honoured() {
        let s = Schedule::parse(&cfg("schedule: '0 9 * * *'\ntimezone: Europe/Paris")).unwrap();
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(
            next_n(&s, "2026-01-10T00:00:00Z", 1),
            ["2026-01-10T08:00:00+00:00"]
        );
        assert_eq!(
            next_n(&s, "2026-07-10T00:00:00Z", 1),
            ["2026-07-10T07:00:00+00:00"]
        );
    }

    #[test]
    fn spring_forward_gap_runs_once_after_the_gap() {
        // 2026-03-29 in Paris: 02:00 jumps to 03:00; 02:30 does not exist that day.
        let s = Schedule::parse(&cfg("schedule: '30 2 * * *'\ntimezone: Europe/Paris")).unwrap();
        let got = next_n(&s, "2026-03-28T12:00:00Z", 2);
        assert_eq!(got[0], "2026-03-29T01:00:00+00:00", "{got:?}"); // 03:00 CEST
        assert_eq!(got[1], "2026-03-30T00:30:00+00:00", "{got:?}"); // 02:30 CEST
    }

    #[test]
    fn fall_back_overlap_runs_once() {
        // 2026-10-25 in Paris: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let s = Schedule::parse(&cfg("schedule: '30 2 * * *'\ntimezone: Europe/Paris")).unwrap();
        let got = next_n(&s, "2026-10-24T12:00:00Z", 2);
        assert_eq!(got[0], "2026-10-25T00:30:00+00:00", "{got:?}"); // first 02:30 (CEST)
        assert_eq!(got[1], "2026-10-26T01:30:00+00:00", "{got:?}"); // next day 02:30 CET
    }

    #[test]
    fn exclusions_skip_days_and_instants() {
        let s = Schedule::parse(&cfg(
            "schedule: '0 12 * * *'\nexclusionDates: ['2026-01-02']\nrecurrence: ['EXDATE:20260103T120000Z', 'EXDATE;VALUE=DATE:20260105']",
        ))
        .unwrap();
        assert_eq!(
            next_n(&s, "2026-01-01T13:00:00Z", 2),
            ["2026-01-04T12:00:00+00:00", "2026-01-06T12:00:00+00:00"]
        );
        let s = Schedule::parse(&cfg(
            "interval: 1h\nrecurrence: ['EXDATE;TZID=Europe/Paris:20260101T020000']",
        ))
        .unwrap();
        // 02:00 Paris = 01:00 UTC is skipped.
        assert_eq!(
            next_n(&s, "2026-01-01T00:00:00Z", 2),
            ["2026-01-01T02:00:00+00:00", "2026-01-01T03:00:00+00:00"]
        );
    }

    /// A clock that moves only when the test says so.
    struct ManualClock(tokio::sync::watch::Sender<DateTime<Utc>>);

    impl ManualClock {
        fn advance(&self, secs: i64) {
            self.0
                .send_modify(|t| *t += chrono::Duration::seconds(secs));
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> DateTime<Utc> {
            *self.0.borrow()
        }
        fn sleep_until(&self, deadline: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send>> {
            let mut rx = self.0.subscribe();
            Box::pin(async move {
                while *rx.borrow_and_update() < deadline {
                    if rx.changed().await.is_err() {
                        return;
                    }
                }
            })
        }
    }

    /// Validates and starts configuration `c` → `yaml` of a calendar on `clock`, and waits
    /// until it is `Running`.
    async fn start(
        h: &portico::testing::Harness,
        clock: &Arc<ManualClock>,
        yaml: &str,
    ) -> (
        ConfigContext,
        tokio::task::JoinHandle<Result<(), ConfigError>>,
    ) {
        let ctx = h.context("c", yaml);
        let exec = Calendar::with_clock(clock.clone());
        let config = exec.validate(&ctx).unwrap();
        let run = tokio::spawn({
            let ctx = ctx.clone();
            async move { exec.start_config(ctx, config).await }
        });
        h.wait_for_phase("c", portico::Phase::Running, Duration::from_secs(5))
            .await
            .unwrap();
        (ctx, run)
    }

    #[tokio::test]
    async fn the_executor_ticks_on_the_injected_clock() {
        let t0 = utc("2026-05-01T12:00:00Z");
        let clock = Arc::new(ManualClock(tokio::sync::watch::channel(t0).0));
        let mut h = portico::testing::Harness::new("cal", "calendar");
        let (ctx, run) = start(&h, &clock, "interval: 10s\nuserPayload: {a: 1}").await;
        let wait = Duration::from_secs(5);
        let time_of = |e: &portico::cloudevents::CloudEvent| {
            let data: serde_json::Value =
                serde_json::from_slice(e.data.as_ref().unwrap().as_bytes()).unwrap();
            assert_eq!(data["userPayload"]["a"], 1);
            data["eventTime"].as_str().unwrap().to_string()
        };

        clock.advance(10);
        let e = h.next_event(wait).await.unwrap();
        assert_eq!(time_of(&e), "2026-05-01T12:00:10Z");
        assert_eq!(e.time, Some(utc("2026-05-01T12:00:10Z")));
        // One tick, one id: its configuration and its scheduled time.
        assert_eq!(e.id, "c@2026-05-01T12:00:10Z");

        // A jump over three ticks: the one waited for is sent, then the latest of those that
        // fell due meanwhile, late; the one between is missed, not queued.
        clock.advance(35);
        let e = h.next_event(wait).await.unwrap();
        assert_eq!(time_of(&e), "2026-05-01T12:00:20Z");
        let e = h.next_event(wait).await.unwrap();
        assert_eq!(time_of(&e), "2026-05-01T12:00:40Z");
        until("1 missed tick counted", || rejected(&h, "missed") == 1).await;
        clock.advance(10);
        let e = h.next_event(wait).await.unwrap();
        assert_eq!(time_of(&e), "2026-05-01T12:00:50Z");
        assert!(h.try_next_event().is_none());
        assert_eq!(rejected(&h, "missed"), 1);

        ctx.stop();
        assert_eq!(run.await.unwrap(), Ok(()));
    }

    /// A configuration taken over from another replica fires the ticks that fell due since
    /// the last one fired there, back to `catchUp`; older ones are counted as missed.
    #[tokio::test]
    async fn a_configuration_taken_over_fires_the_ticks_it_missed_back_to_catch_up() {
        let t0 = utc("2026-05-01T12:00:00Z");
        let times = |h: &mut portico::testing::Harness| {
            let mut out = Vec::new();
            while let Some(e) = h.try_next_event() {
                out.push(e.id.clone());
            }
            out
        };
        for (catch_up, fired, expect, missed) in [
            (
                "1h",
                "2026-05-01T11:59:30Z",
                vec![
                    "c@2026-05-01T11:59:40Z",
                    "c@2026-05-01T11:59:50Z",
                    "c@2026-05-01T12:00:00Z",
                ],
                0,
            ),
            (
                "15s",
                "2026-05-01T11:59:00Z",
                vec!["c@2026-05-01T11:59:50Z", "c@2026-05-01T12:00:00Z"],
                4,
            ),
        ] {
            let clock = Arc::new(ManualClock(tokio::sync::watch::channel(t0).0));
            let mut h = portico::testing::Harness::new("cal", "calendar");
            let ctx = h.context("c", "interval: 10s");
            ctx.set_checkpoint(fired);
            let (ctx, run) =
                start(&h, &clock, &format!("interval: 10s\ncatchUp: {catch_up}")).await;
            let mut got = Vec::new();
            until("the caught-up ticks", || {
                got.extend(times(&mut h));
                got.len() >= expect.len()
            })
            .await;
            assert_eq!(got, expect, "catchUp {catch_up}");
            assert_eq!(rejected(&h, "missed"), missed);
            // The last one fired is the checkpoint the next replica would start from.
            assert_eq!(ctx.checkpoint().as_deref(), Some("2026-05-01T12:00:00Z"));
            // Then the schedule goes on as usual.
            clock.advance(10);
            let e = h.next_event(Duration::from_secs(5)).await.unwrap();
            assert_eq!(e.id, "c@2026-05-01T12:00:10Z");
            ctx.stop();
            assert_eq!(run.await.unwrap(), Ok(()));
        }
    }

    /// A tick that falls due while a configuration taken over still hands over the ticks it
    /// caught up fires too: it is late, not missed.
    #[tokio::test]
    async fn a_tick_due_during_the_catch_up_fires_late() {
        let clock = Arc::new(ManualClock(
            tokio::sync::watch::channel(utc("2026-05-01T12:00:05Z")).0,
        ));
        let mut h = portico::testing::Harness::builder("cal", "calendar")
            .queue_size(1)
            .concurrency(1)
            .build();
        h.pause();
        h.context("c", "interval: 10s")
            .set_checkpoint("2026-05-01T11:59:30Z");
        let (ctx, run) = start(&h, &clock, "interval: 10s").await;
        // 11:59:40 takes the only slot; 11:59:50 waits for room while 12:00:10 falls due.
        until("two caught-up ticks", || received(&h) == 2).await;
        clock.advance(6);
        h.resume();
        let wait = Duration::from_secs(5);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(h.next_event(wait).await.unwrap().id);
        }
        assert_eq!(
            got,
            [
                "c@2026-05-01T11:59:40Z",
                "c@2026-05-01T11:59:50Z",
                "c@2026-05-01T12:00:00Z",
                "c@2026-05-01T12:00:10Z"
            ]
        );
        assert_eq!(rejected(&h, "missed"), 0);
        ctx.stop();
        assert_eq!(run.await.unwrap(), Ok(()));
    }

    fn rejected(h: &portico::testing::Harness, reason: &str) -> u64 {
        h.metric(
            "portico_events_rejected_total",
            &[("src", "c"), ("reason", reason)],
        ) as u64
    }

    fn received(h: &portico::testing::Harness) -> u64 {
        h.metric("portico_events_received_total", &[("src", "c")]) as u64
    }

    async fn until(what: &str, mut f: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{what}: not within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// atLeastOnce: a tick waits for room; of the ticks that fall due meanwhile, the latest
    /// fires late and the others are counted as missed
    /// (`portico_events_rejected_total{reason="missed"}`), not queued.
    #[tokio::test]
    async fn ticks_that_fall_due_while_the_gateway_is_full_are_counted_as_missed() {
        let t0 = utc("2026-05-01T12:00:00Z");
        let clock = Arc::new(ManualClock(tokio::sync::watch::channel(t0).0));
        let mut h = portico::testing::Harness::builder("cal", "calendar")
            .queue_size(1)
            .concurrency(1)
            .build();
        h.pause();
        let (ctx, run) = start(&h, &clock, "interval: 10s").await;
        // 12:00:10 takes the only slot; 12:00:20 waits for room.
        clock.advance(10);
        until("first tick", || received(&h) == 1).await;
        clock.advance(10);
        until("second tick", || received(&h) == 2).await;
        // 12:00:30, :40, :50 fall due while the second waits: :50 fires late, the two
        // before it are missed.
        clock.advance(30);
        h.resume();
        let wait = Duration::from_secs(5);
        let e = h.next_event(wait).await.unwrap();
        assert_eq!(e.time, Some(utc("2026-05-01T12:00:10Z")));
        let e = h.next_event(wait).await.unwrap();
        assert_eq!(e.time, Some(utc("2026-05-01T12:00:20Z")));
        let e = h.next_event(wait).await.unwrap();
        assert_eq!(e.time, Some(utc("2026-05-01T12:00:50Z")));
        until("2 missed ticks counted", || rejected(&h, "missed") == 2).await;
        clock.advance(10);
        let e = h.next_event(wait).await.unwrap();
        assert_eq!(e.time, Some(utc("2026-05-01T12:01:00Z")));
        assert_eq!(rejected(&h, "missed"), 2);
        assert_eq!(rejected(&h, "full"), 0);
        ctx.stop();
        assert_eq!(run.await.unwrap(), Ok(()));
    }

    /// atMostOnce: the calendar never waits; a tick that finds the gateway full is dropped
    /// and counted, and the next one is on time.
    #[tokio::test]
    async fn at_most_once_drops_ticks_instead_of_waiting() {
        let t0 = utc("2026-05-01T12:00:00Z");
        let clock = Arc::new(ManualClock(tokio::sync::watch::channel(t0).0));
        let mut h = portico::testing::Harness::builder("cal", "calendar")
            .queue_size(1)
            .concurrency(1)
            .delivery(portico::testing::Delivery::AtMostOnce)
            .build();
        h.pause();
        let (ctx, run) = start(&h, &clock, "interval: 10s").await;
        for tick in 1..=3 {
            clock.advance(10);
            until("tick", || received(&h) == tick).await;
        }
        // The first took the slot; the next two were refused at once, not waited for.
        until("2 ticks refused", || rejected(&h, "full") == 2).await;
        h.resume();
        let wait = Duration::from_secs(5);
        let e = h.next_event(wait).await.unwrap();
        assert_eq!(e.time, Some(utc("2026-05-01T12:00:10Z")));
        clock.advance(10);
        let e = h.next_event(wait).await.unwrap();
        assert_eq!(e.time, Some(utc("2026-05-01T12:00:40Z")));
        assert_eq!(rejected(&h, "missed"), 0);
        ctx.stop();
        assert_eq!(run.await.unwrap(), Ok(()));
    }

    #[test]
    fn errors_name_the_field() {
        let e = |y: &str| Schedule::parse(&cfg(y)).unwrap_err().to_string();
        assert!(
            e("schedule: '* * bogus * *'").starts_with("schedule: "),
            "{}",
            e("schedule: '* * bogus * *'")
        );
        assert!(e("schedule: '* * *'").contains("has 3 fields"));
        assert!(e("interval: soon").starts_with("interval: "));
        assert!(e("interval: 1s\ntimezone: Mars/Base").starts_with("timezone: "));
        assert!(e("interval: 1s\nexclusionDates: [tomorrow]").starts_with("exclusionDates[0]: "));
        assert!(e("interval: 1s\nrecurrence: ['RRULE:FREQ=DAILY']").starts_with("recurrence[0]: "));
        assert!(e("timezone: UTC").contains("expected `schedule`"));
        assert!(e("interval: 1s\nschedule: '@hourly'").contains("both set"));
    }
}
