//! Go-style durations (`90s`, `2m30s`, `1h`, `1.5s`) as whole seconds, rounded like upstream's
//! `math.Round(d.Seconds())`.

/// Parses a Go duration string into whole seconds (rounded half away from zero).
pub(crate) fn seconds(s: &str) -> Option<u64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    if !total.is_finite() || total < 0.0 || total > u32::MAX as f64 {
        return None;
    }
    Some(total.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::seconds;

    #[test]
    fn go_durations() {
        assert_eq!(seconds("120s"), Some(120));
        assert_eq!(seconds("2m30s"), Some(150));
        assert_eq!(seconds("1h"), Some(3600));
        assert_eq!(seconds("1.5s"), Some(2));
        assert_eq!(seconds("400ms"), Some(0));
        assert_eq!(seconds("0"), Some(0));
        assert_eq!(seconds("5x"), None);
        assert_eq!(seconds(""), None);
        assert_eq!(seconds("s"), None);
    }
}
