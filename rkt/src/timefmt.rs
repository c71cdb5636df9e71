//! Timestamps: nanoseconds since the epoch, printed as rkt printed them (absolute and "2 minutes ago").

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// rkt's absolute layout `2006-01-02 15:04:05.999 -0700 MST`, always in UTC.
pub fn absolute(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let millis = ns.rem_euclid(1_000_000_000) / 1_000_000;
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    );
    // Go's .999 drops trailing zeros.
    if millis != 0 {
        let frac = format!("{millis:03}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    s
}

/// RFC 3339 with nanoseconds, UTC (for JSON).
pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// A relative time like go-humanize's `humanize.Time`: "now", "5 seconds ago", "2 minutes ago".
pub fn relative(ns: i64, now: i64) -> String {
    let diff = (now - ns) / 1_000_000_000;
    let (n, unit) = match diff {
        d if d < 1 => return "now".to_string(),
        d if d < 60 => (d, "second"),
        d if d < 3600 => (d / 60, "minute"),
        d if d < 86_400 => (d / 3600, "hour"),
        d if d < 86_400 * 7 => (d / 86_400, "day"),
        d if d < 86_400 * 30 => (d / (86_400 * 7), "week"),
        d if d < 86_400 * 365 => (d / (86_400 * 30), "month"),
        d => (d / (86_400 * 365), "year"),
    };
    if n == 1 {
        format!("1 {unit} ago")
    } else {
        format!("{n} {unit}s ago")
    }
}

/// Parses a Go-style duration: `30m`, `24h`, `1h30m`, `10s`, `500ms`, `0`.
pub fn parse_duration(s: &str) -> Option<std::time::Duration> {
    if s == "0" {
        return Some(std::time::Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let num: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += num * mult;
        rest = &rest[unit_end..];
    }
    Some(std::time::Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_matches_go_layout() {
        assert_eq!(absolute(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(
            absolute(1_453_740_152_563_000_000),
            "2016-01-25 16:42:32.563 +0000 UTC"
        );
        assert_eq!(
            rfc3339(1_453_740_152_000_000_001),
            "2016-01-25T16:42:32.000000001Z"
        );
    }

    #[test]
    fn relative_and_durations() {
        let s = 1_000_000_000;
        assert_eq!(relative(0, 0), "now");
        assert_eq!(relative(0, 120 * s), "2 minutes ago");
        assert_eq!(relative(0, 3600 * s), "1 hour ago");
        assert_eq!(
            parse_duration("30m"),
            Some(std::time::Duration::from_secs(1800))
        );
        assert_eq!(
            parse_duration("1h30m"),
            Some(std::time::Duration::from_secs(5400))
        );
        assert_eq!(parse_duration("0"), Some(std::time::Duration::ZERO));
        assert_eq!(parse_duration("x"), None);
    }
}
