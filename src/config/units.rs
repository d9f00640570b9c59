//! Human durations and sizes in job files (and on the command line): `500ms`, `15m`, `1h30m`,
//! `128MiB`.

use crate::error::{invalid, Invalid};

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

/// Parses a human duration: `500ms`, `30s`, `15m`, `1h`, `1d`, `2w` (also `1h30m`).
pub fn parse_duration_ms(s: &str) -> Result<i64, Invalid> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    let mut total: i64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid!(
                "`{s}` is not a duration like 500ms, 30s, 15m, 1h, 1d"
            ));
        }
        let n: i64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{s}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let mult = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => MINUTE,
            "h" => HOUR,
            "d" => DAY,
            "w" => 7 * DAY,
            "" => return Err(invalid!("`{s}`: missing unit (ms, s, m, h, d, w)")),
            other => {
                return Err(invalid!(
                    "`{s}`: unknown unit `{other}` (ms, s, m, h, d, w)"
                ))
            }
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| invalid!("`{s}`: too large"))?;
    }
    Ok(total)
}

/// Parses a human size: `512KiB`, `128MiB`, `1GiB`, `10MB`, `4096` (bytes).
pub fn parse_size(s: &str) -> Result<u64, Invalid> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(invalid!("`{s}` is not a size like 128MiB"));
    }
    let n: u64 = t[..digits]
        .parse()
        .map_err(|_| format!("`{s}`: number too large"))?;
    let mult: u64 = match t[digits..].trim() {
        "" | "B" => 1,
        "KB" => 1000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(invalid!(
                "`{s}`: unknown unit `{other}` (B, KB, MB, GB, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| invalid!("`{s}`: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration_ms("15m"), Ok(15 * MINUTE));
        assert_eq!(parse_duration_ms("1h30m"), Ok(90 * MINUTE));
        assert_eq!(parse_duration_ms("250ms"), Ok(250));
        assert!(parse_duration_ms("1x").is_err());
        assert!(parse_duration_ms("h").is_err());
        assert!(parse_duration_ms("10").is_err());
        assert_eq!(parse_size("128MiB"), Ok(128 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12 parsecs").is_err());
    }
}
