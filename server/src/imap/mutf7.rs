//! Modified UTF-7, the 7-bit spelling of mailbox names (RFC 3501 section 5.1.3),
//! checked strictly.
//!
//! A name is printable US-ASCII (0x20..=0x7E), in which `&-` stands for `&` and any
//! other `&` opens a shift sequence: modified BASE64 (`,` in place of `/`, no `=`
//! padding) of UTF-16BE, closed by `-`. [`decode`] accepts a name only in the one
//! spelling RFC 3501 allows for it:
//!
//! - every `&` opens a sequence that a `-` closes, and the sequence holds only the
//!   modified BASE64 alphabet;
//! - the sequence encodes whole UTF-16 code units, its leftover bits (fewer than six)
//!   are zero, and the units are valid UTF-16 (no unpaired surrogate);
//! - it does not encode a printable US-ASCII character, which must be written as
//!   itself ("`&AGE-`" for `a` is invalid), nor a control character (NUL included);
//! - two sequences never touch (`&AOk-&AOk-` must be written `&AOkA6Q-`);
//! - outside sequences, no control character and no 8-bit byte (this server does not
//!   offer `UTF8=ACCEPT`, so non-ASCII names arrive encoded).
//!
//! Why not a crate: the one maintained for Rust, `utf7-imap`, decodes without ever
//! failing (it leaves an unterminated `&Jjo` as it is, turns `&AGE-` into `a` and
//! `&AAA-` into NUL, and panics on BASE64 it cannot read), and the IMAP crates this
//! server uses (imap-codec, imap-types) keep mailbox names as bytes. Refusing a name
//! needs the reason, so the check is here, small and table-tested.

/// Why a mailbox name is not valid modified UTF-7. Positions are byte offsets in the
/// name as the client sent it; the client's bytes themselves are never echoed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("byte {at} is a control character")]
    Control { at: usize },
    #[error("byte {at} is 8-bit; characters beyond US-ASCII must be written in modified BASE64")]
    EightBit { at: usize },
    #[error("the '&' at byte {at} opens a shift sequence that no '-' closes")]
    Unterminated { at: usize },
    #[error("byte {at} is not modified BASE64 (A-Z, a-z, 0-9, '+' and ',' in place of '/')")]
    NotBase64 { at: usize },
    #[error("the shift sequence at byte {at} does not encode whole UTF-16 code units")]
    PartialUnit { at: usize },
    #[error("the shift sequence at byte {at} ends with padding bits that are not zero")]
    Padding { at: usize },
    #[error("the shift sequence at byte {at} holds an unpaired UTF-16 surrogate")]
    Surrogate { at: usize },
    #[error(
        "the shift sequence at byte {at} encodes printable US-ASCII, which must be written as itself"
    )]
    EncodedAscii { at: usize },
    #[error("the shift sequence at byte {at} encodes a control character")]
    EncodedControl { at: usize },
    #[error("the shift sequence at byte {at} directly follows another; they must be one")]
    Adjacent { at: usize },
}

/// Decodes a mailbox name from modified UTF-7, refusing every spelling RFC 3501 does
/// not allow (see the module documentation).
pub fn decode(name: &[u8]) -> Result<String, Invalid> {
    let mut out = String::with_capacity(name.len());
    // True right after a shift sequence that encoded something (not after `&-`).
    let mut after_sequence = false;
    let mut i = 0;
    while let Some(&b) = name.get(i) {
        match b {
            b'&' => {
                let start = i;
                let mut end = i + 1;
                loop {
                    match name.get(end) {
                        None => return Err(Invalid::Unterminated { at: start }),
                        Some(b'-') => break,
                        Some(&c) if sextet(c).is_none() => {
                            return Err(Invalid::NotBase64 { at: end });
                        }
                        Some(_) => end += 1,
                    }
                }
                let body = &name[start + 1..end];
                if body.is_empty() {
                    out.push('&');
                    after_sequence = false;
                } else {
                    if after_sequence {
                        return Err(Invalid::Adjacent { at: start });
                    }
                    decode_sequence(body, start, &mut out)?;
                    after_sequence = true;
                }
                i = end + 1;
            }
            0x20..=0x7e => {
                out.push(char::from(b));
                after_sequence = false;
                i += 1;
            }
            0x80.. => return Err(Invalid::EightBit { at: i }),
            _ => return Err(Invalid::Control { at: i }),
        }
    }
    Ok(out)
}

/// Checks that a mailbox name is valid modified UTF-7.
pub fn validate(name: &[u8]) -> Result<(), Invalid> {
    decode(name).map(drop)
}

/// The value of a modified BASE64 character.
fn sextet(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b',' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// Decodes the BASE64 between `&` and `-` (already checked to be in the alphabet) of
/// the sequence that starts at byte `at`, appending its characters to `out`.
fn decode_sequence(body: &[u8], at: usize, out: &mut String) -> Result<(), Invalid> {
    let mut units = Vec::with_capacity(body.len() * 6 / 16);
    // Bits read but not yet part of a whole unit: `bits` of them, low in `acc`.
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in body {
        let v = sextet(c).ok_or(Invalid::NotBase64 { at })?;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 16 {
            bits -= 16;
            // Truncation intended: the 16 bits above the leftover ones.
            units.push((acc >> bits) as u16);
            acc &= (1 << bits) - 1;
        }
    }
    // A whole character left over encodes nothing: the encoder would not have written it.
    if bits >= 6 {
        return Err(Invalid::PartialUnit { at });
    }
    if acc != 0 {
        return Err(Invalid::Padding { at });
    }
    for c in char::decode_utf16(units) {
        let c = c.map_err(|_| Invalid::Surrogate { at })?;
        if (' '..='~').contains(&c) {
            return Err(Invalid::EncodedAscii { at });
        }
        if c.is_control() {
            return Err(Invalid::EncodedControl { at });
        }
        out.push(c);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spelling RFC 3501 prescribes for `text`: the reference for round trips.
    fn encode(text: &str) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";
        let mut out = String::new();
        let mut pending: Vec<u16> = Vec::new();
        let flush = |pending: &mut Vec<u16>, out: &mut String| {
            if pending.is_empty() {
                return;
            }
            out.push('&');
            let (mut acc, mut bits) = (0u32, 0u32);
            for unit in pending.drain(..) {
                acc = (acc << 16) | u32::from(unit);
                bits += 16;
                while bits >= 6 {
                    bits -= 6;
                    out.push(char::from(ALPHABET[((acc >> bits) & 63) as usize]));
                }
            }
            if bits > 0 {
                out.push(char::from(ALPHABET[((acc << (6 - bits)) & 63) as usize]));
            }
            out.push('-');
        };
        for c in text.chars() {
            if (' '..='~').contains(&c) {
                flush(&mut pending, &mut out);
                if c == '&' {
                    out.push_str("&-");
                } else {
                    out.push(c);
                }
            } else {
                let mut buf = [0u16; 2];
                pending.extend_from_slice(c.encode_utf16(&mut buf));
            }
        }
        flush(&mut pending, &mut out);
        out
    }

    #[test]
    fn valid_names_decode() {
        let cases: &[(&str, &str)] = &[
            ("", ""),
            ("INBOX", "INBOX"),
            ("Sent Items", "Sent Items"),
            ("&-", "&"),
            ("a&-b", "a&b"),
            ("&-&-", "&&"),
            ("&ZeVnLIqe-", "日本語"),
            ("Entw&APw-rfe", "Entwürfe"),
            ("~peter/mail/&U,BTFw-/&ZeVnLIqe-", "~peter/mail/台北/日本語"),
            ("&BB4EQgQ,BEAEMAQyBDsENQQ9BD0ESwQ1-", "Отправленные"),
            ("th&AOkA4g-tre", "théâtre"),
            // A sequence, then an escaped '&', then a sequence: nothing touches.
            ("&AOk-&-&AOk-", "é&é"),
            // A supplementary-plane character: a surrogate pair.
            ("&2D3eAA-", "\u{1F600}"),
            // 3, 6 and 8 BASE64 characters: one, two and three units.
            ("&AOkA6QDp-", "ééé"),
        ];
        for (wire, text) in cases {
            assert_eq!(decode(wire.as_bytes()).as_deref(), Ok(*text), "{wire}");
            assert_eq!(encode(text), *wire, "encoding {text}");
        }
    }

    #[test]
    fn invalid_names_are_refused_with_the_reason() {
        let cases: &[(&[u8], Invalid)] = &[
            // The four from the report.
            (b"&Jjo", Invalid::Unterminated { at: 0 }),
            (b"&AGE-", Invalid::EncodedAscii { at: 0 }),
            (b"m&AAA-", Invalid::EncodedControl { at: 1 }),
            (b"&/+8-", Invalid::NotBase64 { at: 1 }),
            // Unterminated, or ended by something else than '-'.
            (b"&", Invalid::Unterminated { at: 0 }),
            (b"a&AOk", Invalid::Unterminated { at: 1 }),
            (b"&AOk&-", Invalid::NotBase64 { at: 4 }),
            (b"&AOk/x-", Invalid::NotBase64 { at: 4 }),
            (b"&AOk=-", Invalid::NotBase64 { at: 4 }),
            (b"&AO k-", Invalid::NotBase64 { at: 3 }),
            // Not whole units: 1, 2, 4, 5 and 7 characters.
            (b"&A-", Invalid::PartialUnit { at: 0 }),
            (b"&AO-", Invalid::PartialUnit { at: 0 }),
            (b"&AOkA-", Invalid::PartialUnit { at: 0 }),
            (b"&AOkA6-", Invalid::PartialUnit { at: 0 }),
            (b"&AOkA6QD-", Invalid::PartialUnit { at: 0 }),
            // Padding bits set: "&AOl-" is U+00E9 with the low two bits 01.
            (b"&AOl-", Invalid::Padding { at: 0 }),
            (b"&AOkA6R-", Invalid::Padding { at: 0 }),
            // Lone surrogates: a high one alone, a low one alone, two highs.
            (b"&2D0-", Invalid::Surrogate { at: 0 }),
            (b"&3gA-", Invalid::Surrogate { at: 0 }),
            (b"&2D3YPQ-", Invalid::Surrogate { at: 0 }),
            // Printable US-ASCII written as BASE64, even beside other characters,
            // and '&' itself (spelt "&-").
            (b"&AOkAYQ-", Invalid::EncodedAscii { at: 0 }),
            (b"&ACY-", Invalid::EncodedAscii { at: 0 }),
            (b"&AC8-", Invalid::EncodedAscii { at: 0 }),
            // Encoded controls: NUL, TAB, DEL, a C1 control.
            (b"&AAk-", Invalid::EncodedControl { at: 0 }),
            (b"&AH8-", Invalid::EncodedControl { at: 0 }),
            (b"&AIU-", Invalid::EncodedControl { at: 0 }),
            // Two sequences that touch.
            (b"&AOk-&AOk-", Invalid::Adjacent { at: 5 }),
            (b"x&ZeVnLA-&ip4-", Invalid::Adjacent { at: 9 }),
            // Raw bytes that must not appear.
            (b"a\0b", Invalid::Control { at: 1 }),
            (b"a\tb", Invalid::Control { at: 1 }),
            (b"a\x7fb", Invalid::Control { at: 1 }),
            ("Entwürfe".as_bytes(), Invalid::EightBit { at: 4 }),
            (b"\xff", Invalid::EightBit { at: 0 }),
        ];
        for (wire, why) in cases {
            assert_eq!(decode(wire), Err(*why), "{}", String::from_utf8_lossy(wire));
            assert!(validate(wire).is_err());
        }
    }

    #[test]
    fn every_non_ascii_character_round_trips() {
        // Each scalar value outside printable US-ASCII and the controls, alone and
        // between ASCII, is accepted in its canonical spelling and decodes back.
        let mut checked = 0;
        for c in (0u32..0x3_0000).step_by(7).filter_map(char::from_u32) {
            if (' '..='~').contains(&c) || c.is_control() {
                continue;
            }
            for text in [c.to_string(), format!("a{c}b{c}{c}/&")] {
                let wire = encode(&text);
                assert_eq!(decode(wire.as_bytes()), Ok(text), "{wire}");
            }
            checked += 1;
        }
        assert!(checked > 20_000, "only {checked} characters checked");
    }

    #[test]
    fn reasons_read_well() {
        let text = Invalid::Unterminated { at: 3 }.to_string();
        assert_eq!(
            text,
            "the '&' at byte 3 opens a shift sequence that no '-' closes"
        );
    }
}
