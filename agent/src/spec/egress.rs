//! `[network] egress_rate` and `egress_burst`: the outbound rate limit of a
//! container, validated.
//!
//! The rate is what the container's applications get: the payload rate of
//! full-size TCP segments (what iperf3 reports). `runtime::shaping` turns it
//! into the kernel's link-layer rate for each device.

use std::fmt;

use super::{Value, parse_size};

/// Slowest rate accepted: below this a single full-size packet takes
/// longer than a second.
pub const MIN_RATE: u64 = 8_000;
/// Fastest rate accepted (bits per second).
pub const MAX_RATE: u64 = 100_000_000_000;
/// Smallest burst accepted: a burst smaller than a full-size packet on a
/// 1500-byte link would stall the class.
pub const MIN_BURST: u64 = 2048;
/// Longest burst accepted, in seconds at the rate (the kernel keeps the
/// bucket's depth as a 32-bit count of 64 ns ticks).
pub const MAX_BURST_SECONDS: u64 = 60;

/// A validated outbound rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Egress {
    /// Bits per second of payload.
    pub rate: u64,
    /// Bytes that may leave at once above the rate.
    pub burst: u64,
}

impl Egress {
    /// The limit from the two fields as written (`burst` may be absent).
    pub fn new(rate: &Value, burst: Option<&Value>) -> Result<Self, String> {
        let rate = match rate {
            Value::Str(s) => parse_bit_rate(s).ok_or_else(|| {
                format!("invalid rate {s:?} (a number and a unit: bit, kbit, mbit, gbit or tbit, e.g. \"10mbit\")")
            })?,
            Value::Int(i) if *i > 0 => *i as u64,
            other => {
                return Err(format!(
                    "invalid rate {other} (a string such as \"10mbit\", or bits per second)"
                ));
            }
        };
        if !(MIN_RATE..=MAX_RATE).contains(&rate) {
            return Err(format!(
                "rate {} out of range 8kbit-100gbit",
                DisplayRate(rate)
            ));
        }
        let burst = match burst {
            None => default_burst(rate),
            Some(Value::Int(i)) if *i > 0 => *i as u64,
            Some(Value::Str(s)) => parse_size(s).ok_or_else(|| {
                format!("invalid burst {s:?} (bytes, or a size such as \"64k\" or \"1M\")")
            })?,
            Some(other) => {
                return Err(format!(
                    "invalid burst {other} (bytes, or a size such as \"64k\")"
                ));
            }
        };
        if burst < MIN_BURST {
            return Err(format!(
                "burst {burst} bytes is below {MIN_BURST} (one full-size packet must fit)"
            ));
        }
        if burst.saturating_mul(8) / rate > MAX_BURST_SECONDS {
            return Err(format!(
                "burst {burst} bytes lasts more than {MAX_BURST_SECONDS} s at {}",
                DisplayRate(rate)
            ));
        }
        Ok(Self { rate, burst })
    }
}

/// Without `egress_burst`: 64 KiB, or 2 ms at the rate if that is more (a
/// fast class needs a deeper bucket to keep the device busy).
pub fn default_burst(rate: u64) -> u64 {
    (64 * 1024).max(rate / 8 / 500)
}

/// Parses `N[.F]UNIT` with UNIT one of bit, kbit, mbit, gbit, tbit
/// (decimal multiples, any case; `bps` spellings are refused because tc
/// reads them as bytes). `None` if malformed.
pub fn parse_bit_rate(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = t.split_at(split);
    let scale: f64 = match unit {
        "bit" => 1.0,
        "kbit" => 1e3,
        "mbit" => 1e6,
        "gbit" => 1e9,
        "tbit" => 1e12,
        _ => return None,
    };
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let bits = (value * scale).round();
    (bits.is_finite() && bits >= 1.0 && bits < u64::MAX as f64).then_some(bits as u64)
}

/// A rate as people write it: `10mbit`, `1.5gbit`, `64kbit`.
pub struct DisplayRate(pub u64);

impl fmt::Display for DisplayRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [(1e12, "tbit"), (1e9, "gbit"), (1e6, "mbit"), (1e3, "kbit")];
        let bits = self.0 as f64;
        for (scale, unit) in units {
            if bits >= scale {
                let v = bits / scale;
                return if v.fract() == 0.0 {
                    write!(f, "{v}{unit}")
                } else {
                    write!(f, "{}{unit}", (v * 1000.0).round() / 1000.0)
                };
            }
        }
        write!(f, "{}bit", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_decimal_bit_units() {
        assert_eq!(parse_bit_rate("10mbit"), Some(10_000_000));
        assert_eq!(parse_bit_rate("1.5Gbit"), Some(1_500_000_000));
        assert_eq!(parse_bit_rate("64kbit"), Some(64_000));
        assert_eq!(parse_bit_rate(" 800bit "), Some(800));
        for bad in [
            "10", "10mbps", "mbit", "1..5mbit", ".5mbit", "5.mbit", "-1mbit", "10 mbit",
        ] {
            assert_eq!(parse_bit_rate(bad), None, "{bad}");
        }
    }

    #[test]
    fn limits_are_checked_and_burst_defaults_to_the_rate() {
        let s = |t: &str| Value::Str(t.into());
        let e = Egress::new(&s("10mbit"), None).unwrap();
        assert_eq!(
            e,
            Egress {
                rate: 10_000_000,
                burst: 65536
            }
        );
        let fast = Egress::new(&s("1gbit"), None).unwrap();
        assert_eq!(fast.burst, 250_000);
        assert_eq!(
            Egress::new(&s("10mbit"), Some(&s("1M"))).unwrap().burst,
            1 << 20
        );
        assert!(
            Egress::new(&s("1kbit"), None)
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            Egress::new(&s("10mbps"), None)
                .unwrap_err()
                .contains("invalid rate")
        );
        assert!(
            Egress::new(&s("10mbit"), Some(&s("1k")))
                .unwrap_err()
                .contains("below")
        );
        assert!(
            Egress::new(&s("8kbit"), Some(&s("1M")))
                .unwrap_err()
                .contains("more than 60 s")
        );
        assert!(Egress::new(&Value::Float(1.5), None).is_err());
    }

    #[test]
    fn rates_display_as_written() {
        assert_eq!(DisplayRate(10_000_000).to_string(), "10mbit");
        assert_eq!(DisplayRate(1_500_000_000).to_string(), "1.5gbit");
        assert_eq!(DisplayRate(999).to_string(), "999bit");
    }
}
