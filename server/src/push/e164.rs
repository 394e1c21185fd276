//! E.164 addresses of trusted SMSCs (and PPGs) and their prefix matching.
//!
//! Matching works on the string `<NPI><TON><digits>` (INTERFACES.md 6.2): the
//! numbering-plan indicator as one hex digit, the type of number as one digit, then the
//! address digits. `+35809503401` (international, ISDN/E.164) is `1135809503401`; a
//! whitelist entry `+358` is `11358` and matches it as a prefix. An entry written with
//! digits only is taken as already in that form. Visual separators (blank, `-`, `.`,
//! `(`, `)`) are ignored everywhere.

/// Numbering plan: ISDN/telephony (E.164).
pub const NPI_ISDN: u8 = 1;
/// Type of number: unknown.
pub const TON_UNKNOWN: u8 = 0;
/// Type of number: international.
pub const TON_INTERNATIONAL: u8 = 1;
/// Type of number: national.
pub const TON_NATIONAL: u8 = 2;

/// A value that is not an E.164 address (or TON/NPI out of range).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not an E.164 address: {why}")]
pub struct E164Error {
    /// The offending value.
    pub value: String,
    /// Why it was refused.
    pub why: &'static str,
}

fn error(value: &str, why: &'static str) -> E164Error {
    E164Error {
        value: value.to_owned(),
        why,
    }
}

fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '\t' | '-' | '.' | '(' | ')')
}

/// The value without visual separators or surrounding blanks.
pub fn strip_separators(value: &str) -> String {
    value.chars().filter(|&c| !is_separator(c)).collect()
}

/// Splits a stripped value into (international, digits), checking it.
fn split(value: &str) -> Result<(bool, String), E164Error> {
    let stripped = strip_separators(value);
    let (plus, digits) = match stripped.strip_prefix('+') {
        Some(rest) => (true, rest),
        None => (false, stripped.as_str()),
    };
    if digits.is_empty() {
        return Err(error(value, "it has no digits"));
    }
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(error(
            value,
            "only digits, a leading + and separators are allowed",
        ));
    }
    if digits.len() > 32 {
        return Err(error(value, "it has more than 32 digits"));
    }
    Ok((plus, digits.to_owned()))
}

/// The stored form of a whitelist entry: `+` and digits, or digits only.
pub fn normalize_entry(value: &str) -> Result<String, E164Error> {
    let (plus, digits) = split(value)?;
    Ok(if plus { format!("+{digits}") } else { digits })
}

/// The `<NPI><TON><digits>` prefix an entry stands for.
pub fn entry_key(value: &str) -> Result<String, E164Error> {
    let (plus, digits) = split(value)?;
    Ok(if plus {
        format!("{NPI_ISDN}{TON_INTERNATIONAL}{digits}")
    } else {
        digits
    })
}

/// The `<NPI><TON><digits>` string of an origin address. Explicit TON/NPI win; without
/// them a leading `+` means international E.164 and no `+` means TON unknown, NPI ISDN.
pub fn origin_key(address: &str, ton: Option<u8>, npi: Option<u8>) -> Result<String, E164Error> {
    let (plus, digits) = split(address)?;
    let ton = ton.unwrap_or(if plus { TON_INTERNATIONAL } else { TON_UNKNOWN });
    let npi = npi.unwrap_or(NPI_ISDN);
    if ton > 7 {
        return Err(error(address, "the type of number is 0 to 7"));
    }
    if npi > 15 {
        return Err(error(address, "the numbering plan is 0 to 15"));
    }
    Ok(format!("{npi:x}{ton}{digits}"))
}

/// Whether an origin (already as [`origin_key`]) matches an entry value.
pub fn matches(origin_key: &str, entry: &str) -> bool {
    entry_key(entry).is_ok_and(|prefix| origin_key.starts_with(&prefix))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(entry_key("+358").unwrap(), "11358");
        assert_eq!(entry_key(" +358 (0) 95-03.401 ").unwrap(), "1135809503401");
        assert_eq!(entry_key("11358").unwrap(), "11358");
        assert_eq!(normalize_entry(" +44 79 ").unwrap(), "+4479");
        assert_eq!(normalize_entry("1244").unwrap(), "1244");
        assert!(entry_key("+").is_err());
        assert!(entry_key("").is_err());
        assert!(entry_key("+35a").is_err());
        assert!(entry_key("++358").is_err());
        assert_eq!(
            origin_key("+35809503401", None, None).unwrap(),
            "1135809503401"
        );
        assert_eq!(
            origin_key("0401234567", Some(2), Some(1)).unwrap(),
            "120401234567"
        );
        assert_eq!(
            origin_key("0401234567", None, None).unwrap(),
            "100401234567"
        );
        assert_eq!(origin_key("12345", Some(0), Some(9)).unwrap(), "9012345");
        assert_eq!(origin_key("12345", Some(1), Some(14)).unwrap(), "e112345");
        assert!(origin_key("1", Some(8), None).is_err());
        assert!(origin_key("1", None, Some(16)).is_err());
    }

    #[test]
    fn prefix_table() {
        // (origin, ton, npi, entry, matches)
        type Case<'a> = (&'a str, Option<u8>, Option<u8>, &'a str, bool);
        let cases: &[Case] = &[
            ("+35809503401", None, None, "+358", true),
            ("+35809503401", None, None, "+35809503401", true),
            ("+35809503401", None, None, "11358", true),
            ("+35809503401", None, None, "1135809503401", true),
            ("+358 0950 3401", None, None, "+358-09", true),
            ("+35809503401", None, None, "+359", false),
            ("+358", None, None, "+35809503401", false),
            // Explicit international TON/NPI equal the leading +.
            ("35809503401", Some(1), Some(1), "+358", true),
            // National and unknown numbers never match an international prefix...
            ("0950 3401", Some(2), Some(1), "+358", false),
            ("35809503401", None, None, "+358", false),
            // ...but do match entries written in <NPI><TON><digits> form.
            ("09503401", Some(2), Some(1), "1209", true),
            ("09503401", Some(0), Some(1), "1009", true),
            ("09503401", None, None, "1009", true),
            ("09503401", Some(2), Some(1), "1009", false),
            // Another numbering plan does not match ISDN entries.
            ("+4479", None, Some(9), "+44", false),
            // Bad entries match nothing.
            ("+4479", None, None, "+", false),
        ];
        for (origin, ton, npi, entry, expected) in cases {
            let key = origin_key(origin, *ton, *npi).unwrap();
            assert_eq!(
                matches(&key, entry),
                *expected,
                "{origin} ton={ton:?} npi={npi:?} vs {entry}"
            );
        }
    }
}
