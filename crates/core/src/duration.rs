//! Human durations as users write them on the command line and in the config: `500ms`, `2s`.

use std::time::Duration;

/// Parses `250us`, `500ms`, `2s`, `1.5s`, `10m`, `1h` (a bare number is seconds).
/// The error names the text.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || {
        format!("invalid duration '{text}': expected a number with a unit, like 500ms, 2s or 1m")
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(bad()),
    };
    let secs = value * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("500ms", ms(500)),
            ("2s", ms(2000)),
            ("1.5s", ms(1500)),
            ("3", ms(3000)),
            ("1m", ms(60_000)),
            ("1h", ms(3_600_000)),
            ("250us", Duration::from_micros(250)),
            (" 10ms ", ms(10)),
        ] {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejects_garbage_naming_it() {
        for bad in ["", "soon", "5 parsecs", "1..2s", "-1s", "ms", "1e999s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(&format!("'{bad}'")), "{err}");
        }
    }
}
