//! Go-compatible RFC3339Nano formatting of unix-nanosecond timestamps and TTL rounding.

/// Formats unix nanoseconds as Go's `time.RFC3339Nano` in UTC (trailing zeros of the fraction trimmed).
pub fn rfc3339_nano(ns: i64) -> String {
    // Every i64 count of nanoseconds (years 1677 to 2262) is in range.
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut s = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if t.nanosecond() != 0 {
        let frac = format!("{:09}", t.nanosecond());
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
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
