//! Go-compatible RFC3339Nano formatting of unix-nanosecond timestamps and TTL rounding.

/// Formats unix nanoseconds as Go's `time.RFC3339Nano` in UTC (trailing zeros of the fraction trimmed).
pub fn rfc3339_nano(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let mut s = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        (sod % 3600) / 60,
        sod % 60
    );
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Days since 1970-01-01 to a (year, month, day) civil date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
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

/// Seconds left until `expire_ns` at `now_ns`, rounded like etcd (integer division, plus one on a positive remainder).
pub fn ttl_seconds(expire_ns: i64, now_ns: i64) -> i64 {
    let left = expire_ns.saturating_sub(now_ns);
    let mut ttl = left / 1_000_000_000;
    if left % 1_000_000_000 > 0 {
        ttl += 1;
    }
    ttl
}

/// The current wall-clock time in unix nanoseconds.
pub fn now_ns() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339_nano(1_795_315_048_222_214_486),
            "2026-11-22T02:37:28.222214486Z"
        );
        assert_eq!(
            rfc3339_nano(951_782_400_500_000_000),
            "2000-02-29T00:00:00.5Z"
        );
    }

    #[test]
    fn ttl_rounds_up() {
        assert_eq!(ttl_seconds(5_000_000_000, 0), 5);
        assert_eq!(ttl_seconds(5_000_000_001, 0), 6);
        assert_eq!(ttl_seconds(0, 300_000_000), 0);
        assert_eq!(ttl_seconds(0, 1_300_000_000), -1);
    }
}
