//! Cron schedules for digests, evaluated in a named IANA time zone.
//!
//! A digest set for "09:00 Europe/Amsterdam" must follow the wall clock through daylight
//! saving changes, and a bot that restarts must be able to list what it missed. The rules:
//!
//! * croner matches the pattern against the *wall clock* only (we hand it `NaiveDateTime`,
//!   which has no DST); this module alone maps wall-clock matches to instants.
//!   One mapping for every pattern keeps the DST rules below true for interval patterns too,
//!   which croner's own zone-aware search treats differently (it skips them in a gap and fires
//!   them twice in an overlap).
//! * A wall-clock time that does not exist (spring forward) fires at the first instant after
//!   the gap, once, however many matching times fell into the gap.
//! * A wall-clock time that occurs twice (fall back) fires once, at its earlier instant.
//!
//! The mapping never moves backwards in time, so "the first match whose instant is after X"
//! is found by walking wall-clock matches forward from X's own wall-clock time.

use std::fmt;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// Field names and accepted values, in pattern order, for error messages.
const FIELDS: [(&str, &str); 5] = [
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("weekday", "0-7 or SUN-SAT"),
];
const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Upper bound on wall-clock matches skipped inside one repeated (fall-back) stretch.
/// Real overlaps are at most a day long, which is 1440 matches of `* * * * *`.
const MAX_SKIPPED_MATCHES: usize = 10_000;
/// Longest gap searched for its end: a whole day (Samoa skipped 2011-12-30) plus margin.
const MAX_GAP_MINUTES: i64 = 2 * 24 * 60;

/// A parsed 5-field cron expression bound to an IANA time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expression: String,
    tz: Tz,
    cron: Cron,
}

impl Schedule {
    /// Parses `cron` (minute hour day-of-month month weekday; names like `MON` and `JAN`
    /// allowed) and the IANA zone `tz`. Errors are sentences for the person who typed them:
    /// they name the bad part and show what would be accepted.
    pub fn parse(cron: &str, tz: &str) -> Result<Schedule, String> {
        let tz = parse_time_zone(tz)?;
        let fields: Vec<&str> = cron.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "{cron:?} is not a 5-field cron expression (minute hour day month weekday), \
                 e.g. \"0 9 * * MON\""
            ));
        }
        let expression = fields.join(" ");
        for (index, field) in fields.iter().enumerate() {
            check_field(&expression, index, field)?;
        }
        let cron = parser().parse(&expression).map_err(|e| {
            format!("invalid cron expression {expression:?} ({e}); e.g. \"0 9 * * MON-FRI\"")
        })?;
        let schedule = Schedule {
            expression,
            tz,
            cron,
        };
        // A pattern such as "0 0 31 2 *" parses but can never fire; say so now rather than
        // silently never sending the digest.
        if schedule
            .next_wall_match(DateTime::UNIX_EPOCH.naive_utc())
            .is_none()
        {
            return Err(format!(
                "{:?} never fires: no date matches its day, month and weekday fields",
                schedule.expression
            ));
        }
        Ok(schedule)
    }

    /// The normalised expression (single spaces), as it should be shown back to people.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression is read in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The first firing strictly after `after`, or `None` if there is none (beyond year 5000).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Matches at or before `after`'s own wall-clock time map to instants at or before
        // `after`, so the walk starts there. Whole seconds only: patterns have no seconds.
        let local = after.with_timezone(&self.tz).naive_local();
        let mut wall = local.with_nanosecond(0).unwrap_or(local);
        // Only inside a repeated stretch can a later wall-clock match map to an instant that
        // is not after `after` (its earlier instant already fired); those are skipped.
        for _ in 0..MAX_SKIPPED_MATCHES {
            wall = self.next_wall_match(wall)?;
            let at = self.instant_of(wall)?;
            if at > after {
                return Some(at);
            }
        }
        None
    }

    /// Firings in `(from, to]`, oldest first, at most `limit` of them: what was missed while
    /// the bot was down. A caller that wants only the latest missed digest takes the last one.
    pub fn firings_between(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut firings = Vec::new();
        let mut cursor = from;
        while firings.len() < limit {
            match self.next_after(cursor) {
                Some(at) if at <= to => {
                    firings.push(at);
                    cursor = at;
                }
                _ => break,
            }
        }
        firings
    }

    /// The first wall-clock time strictly after `wall` that the pattern matches.
    fn next_wall_match(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        self.cron.find_next_occurrence(&wall, false).ok()
    }

    /// The instant a matching wall-clock time fires at: itself, the earlier of two, or the
    /// end of the gap it fell into.
    fn instant_of(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => Some(at.to_utc()),
            LocalResult::None => self.end_of_gap(wall),
        }
    }

    /// The first instant after a gap: the first wall-clock second after `wall` that exists.
    /// Steps by minutes, then back over seconds, since transitions need not be on a minute.
    fn end_of_gap(&self, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
        let exists = |w: NaiveDateTime| self.tz.from_local_datetime(&w).earliest();
        let mut probe = wall;
        for _ in 0..MAX_GAP_MINUTES {
            let next = probe.checked_add_signed(Duration::minutes(1))?;
            if exists(next).is_some() {
                let mut second = probe;
                while second < next {
                    second = second.checked_add_signed(Duration::seconds(1))?;
                    if let Some(at) = exists(second) {
                        return Some(at.to_utc());
                    }
                }
            }
            probe = next;
        }
        None
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.expression, self.tz.name())
    }
}

/// croner's parser for exactly five fields: no seconds, no year, and the usual (vixie) OR
/// of day-of-month and weekday when both are restricted.
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

/// Checks one field on its own so the error can name it. Also rejects names in the wrong
/// field: croner replaces `MON` and `JAN` anywhere in the pattern, so "0 9 * MON *" would
/// otherwise quietly mean January.
fn check_field(expression: &str, index: usize, field: &str) -> Result<(), String> {
    let (name, accepted) = FIELDS[index];
    let fail = |why: &str| {
        Err(format!(
            "invalid {name} field {field:?} in {expression:?}{why}; expected {accepted}, \
             a list, range or step such as */15, e.g. \"0 9 * * MON-FRI\""
        ))
    };
    let upper = field.to_ascii_uppercase();
    let wrong_names: &[&str] = match index {
        3 => &WEEKDAY_NAMES,
        4 => &MONTH_NAMES,
        _ => &[],
    };
    if index < 2 && upper.chars().any(|c| c.is_ascii_alphabetic()) {
        return fail(" (names are only allowed for month and weekday)");
    }
    if wrong_names.iter().any(|n| upper.contains(n)) {
        return fail(" (a name that belongs to the other of month and weekday)");
    }
    let mut probe = ["*"; 5];
    probe[index] = field;
    match parser().parse(&probe.join(" ")) {
        Ok(_) => Ok(()),
        Err(e) => fail(&format!(" ({e})")),
    }
}

/// Parses an IANA zone name, suggesting the closest real name for a typo.
fn parse_time_zone(name: &str) -> Result<Tz, String> {
    let trimmed = name.trim();
    if let Ok(tz) = trimmed.parse::<Tz>() {
        return Ok(tz);
    }
    let mut message = format!(
        "unknown time zone {name:?}; expected an IANA name such as Europe/Amsterdam or UTC"
    );
    if let Some(suggestion) = closest_time_zone(trimmed) {
        message.push_str(&format!(" (did you mean {suggestion}?)"));
    }
    Err(message)
}

/// The IANA name nearest to `name` (case-insensitive edit distance of at most 3), if any.
fn closest_time_zone(name: &str) -> Option<&'static str> {
    let wanted: Vec<char> = name.to_lowercase().chars().collect();
    chrono_tz::TZ_VARIANTS
        .iter()
        .map(|tz| {
            let candidate: Vec<char> = tz.name().to_lowercase().chars().collect();
            (edit_distance(&wanted, &candidate), tz.name())
        })
        .filter(|(distance, _)| *distance <= 3)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, name)| name)
}

/// Levenshtein distance, one row at a time.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "2026-03-28 01:30" (UTC) or RFC 3339.
    fn utc(s: &str) -> DateTime<Utc> {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M")
            .map(|n| n.and_utc())
            .or_else(|_| DateTime::parse_from_rfc3339(s).map(|d| d.to_utc()))
            .expect("test instant")
    }

    fn schedule(cron: &str, tz: &str) -> Schedule {
        Schedule::parse(cron, tz).expect("valid schedule")
    }

    /// Asserts the exact firings of `cron` in `tz` within `(from, to]`.
    fn assert_firings(cron: &str, tz: &str, (from, to): (&str, &str), want: &[&str]) {
        let got = schedule(cron, tz).firings_between(utc(from), utc(to), 100);
        let want: Vec<_> = want.iter().map(|w| utc(w)).collect();
        assert_eq!(got, want, "{cron} in {tz}");
    }

    const AMS: &str = "Europe/Amsterdam";

    #[test]
    fn amsterdam_spring_forward_fires_missing_time_once_at_gap_end() {
        // 2026-03-29 02:00 CET jumps to 03:00 CEST at 01:00Z; 02:30 does not exist.
        let days = ("2026-03-27 12:00", "2026-03-31 00:00");
        let want = ["2026-03-28 01:30", "2026-03-29 01:00", "2026-03-30 00:30"];
        assert_firings("30 2 * * *", AMS, days, &want);
        let s = schedule("30 2 * * *", AMS);
        let next = |after: &str| s.next_after(utc(after));
        assert_eq!(next("2026-03-29T00:59:59Z"), Some(utc("2026-03-29 01:00")));
        assert_eq!(next("2026-03-29 01:00"), Some(utc("2026-03-30 00:30")));
    }

    #[test]
    fn amsterdam_fall_back_fires_repeated_time_once() {
        // 2026-10-25 03:00 CEST falls back to 02:00 CET at 01:00Z; 02:30 happens twice.
        let days = ("2026-10-23 12:00", "2026-10-27 00:00");
        let want = ["2026-10-24 00:30", "2026-10-25 00:30", "2026-10-26 01:30"];
        assert_firings("30 2 * * *", AMS, days, &want);
        let s = schedule("30 2 * * *", AMS);
        // Between the two 02:30s, and at or after the second one: the next is a day later.
        for after in ["2026-10-25 00:45", "2026-10-25 01:15", "2026-10-25 01:30"] {
            let next = s.next_after(utc(after));
            assert_eq!(next, Some(utc("2026-10-26 01:30")), "after {after}");
        }
    }

    #[test]
    fn amsterdam_weekday_mornings_follow_the_wall_clock() {
        // Fri 09:00 CET is 08:00Z, Mon 09:00 CEST is 07:00Z; the weekend is skipped.
        let spring = ("2026-03-26 12:00", "2026-03-31 12:00");
        let want = ["2026-03-27 08:00", "2026-03-30 07:00", "2026-03-31 07:00"];
        assert_firings("0 9 * * MON-FRI", AMS, spring, &want);
        let autumn = ("2026-10-22 12:00", "2026-10-27 12:00");
        let want = ["2026-10-23 07:00", "2026-10-26 08:00", "2026-10-27 08:00"];
        assert_firings("0 9 * * mon-fri", AMS, autumn, &want);
    }

    #[test]
    fn new_york_transitions() {
        // 2026-03-08 02:00 EST -> 03:00 EDT at 07:00Z; 2026-11-01 02:00 EDT -> 01:00 EST at 06:00Z.
        let ny = "America/New_York";
        let spring = ("2026-03-07 00:00", "2026-03-09 12:00");
        let want = ["2026-03-07 07:30", "2026-03-08 07:00", "2026-03-09 06:30"];
        assert_firings("30 2 * * *", ny, spring, &want);
        let autumn = ("2026-10-31 00:00", "2026-11-02 12:00");
        let want = ["2026-10-31 05:30", "2026-11-01 05:30", "2026-11-02 06:30"];
        assert_firings("30 1 * * *", ny, autumn, &want);
    }

    #[test]
    fn interval_patterns_obey_the_same_dst_rules() {
        // croner alone would skip all of these on the gap day and fire the hourly one twice.
        // The four gap times collapse into one firing at 03:00 CEST, which is also 03:00's.
        let gap = ("2026-03-29 00:00", "2026-03-29 01:20");
        let want = ["2026-03-29 01:00", "2026-03-29 01:15"];
        assert_firings("*/15 2,3 * * *", AMS, gap, &want);
        assert_firings("0,30 2 * * *", AMS, gap, &["2026-03-29 01:00"]);
        // The repeated 02:00 fires once (00:00Z, not again at 01:00Z).
        let overlap = ("2026-10-24 22:30", "2026-10-25 02:00");
        let want = ["2026-10-24 23:00", "2026-10-25 00:00", "2026-10-25 02:00"];
        assert_firings("0 * * * *", AMS, overlap, &want);
    }

    #[test]
    fn firings_between_is_exclusive_inclusive_and_limited() {
        let s = schedule("0 * * * *", "UTC");
        let (from, to) = (utc("2026-01-01 00:00"), utc("2026-01-01 03:00"));
        let want = ["2026-01-01 01:00", "2026-01-01 02:00", "2026-01-01 03:00"].map(utc);
        assert_eq!(s.firings_between(from, to, 10), want);
        assert_eq!(s.firings_between(from, to, 2), want[..2]);
        assert!(s.firings_between(to, from, 5).is_empty());
        assert!(s.firings_between(from, to, 0).is_empty());
        // A sub-second `after` still means strictly after.
        let after = utc("2026-01-01T01:00:00.5Z");
        assert_eq!(s.next_after(after), Some(utc("2026-01-01 02:00")));
    }

    #[test]
    fn error_messages_say_what_is_accepted() {
        let err = |c: &str, tz: &str| Schedule::parse(c, tz).expect_err("should be rejected");
        let five = "is not a 5-field cron expression (minute hour day month weekday), \
                    e.g. \"0 9 * * MON\"";
        assert_eq!(err("0 9 * *", "UTC"), format!("\"0 9 * *\" {five}"));
        assert_eq!(
            err("0 0 9 * * MON", "UTC"),
            format!("\"0 0 9 * * MON\" {five}")
        );
        assert_eq!(err("@daily", "UTC"), format!("\"@daily\" {five}"));
        let zone = "expected an IANA name such as Europe/Amsterdam or UTC";
        let want = format!("unknown time zone \"Mars/Olympus\"; {zone}");
        assert_eq!(err("0 9 * * MON", "Mars/Olympus"), want);
        let want = format!("unknown time zone \"Europe/Amsterdm\"; {zone} (did you mean {AMS}?)");
        assert_eq!(err("0 9 * * MON", "Europe/Amsterdm"), want);
        let hour = err("0 25 * * *", "UTC");
        assert!(
            hour.starts_with("invalid hour field \"25\" in \"0 25 * * *\""),
            "{hour}"
        );
        assert!(hour.contains("expected 0-23"), "{hour}");
        assert!(err("0 9 * * FUNDAY", "UTC").starts_with("invalid weekday field"));
        // croner alone would read MON in the month field as January.
        assert!(err("0 9 * MON *", "UTC").starts_with("invalid month field"));
        assert!(err("0 9 * * JAN", "UTC").starts_with("invalid weekday field"));
        assert!(err("0 0 31 2 *", "UTC").contains("never fires"));
    }

    #[test]
    fn accepts_names_and_normalises_spacing() {
        let s = schedule("  0  9 * JAN,jul  mon ", " Europe/Amsterdam ");
        assert_eq!(s.to_string(), "0 9 * JAN,jul mon (Europe/Amsterdam)");
        // 2026-07-06 is a Monday: 09:00 CEST is 07:00Z.
        let next = s.next_after(utc("2026-07-01 00:00"));
        assert_eq!(next, Some(utc("2026-07-06 07:00")));
    }
}
