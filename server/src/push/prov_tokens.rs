//! The WBXML token tables of PROV 1.0/1.1 (public id 0x0B, "-//WAPFORUM//DTD PROV 1.0//EN"),
//! as OMA-WAP-ProvCont-v1_1 section 7 defines them: tag tokens, attribute start tokens
//! and attribute value tokens, each on code pages 0 and 1.
//!
//! The attribute value tokens of page 1 for AAUTHTYPE are 0x90-0x93 (the 2005 and later
//! editions); the first edition's 0x80-0x83 collide with WBXML's global tokens EXT_T_0..
//! LITERAL_A and cannot be decoded, so they are not listed. Values such as the APPIDs
//! `w2`, `w4` or `w7` have no tokens in the specification: encoders send them as strings.

/// Tag name of a tag token (the token's low six bits) on a code page.
pub(crate) fn tag(page: u8, id: u8) -> Option<&'static str> {
    Some(match (page, id) {
        (0, 0x05) => "wap-provisioningdoc",
        (0 | 1, 0x06) => "characteristic",
        (0 | 1, 0x07) => "parm",
        _ => return None,
    })
}

/// Attribute name and value prefix of an attribute start token on a code page.
pub(crate) fn attr_start(page: u8, token: u8) -> Option<(&'static str, &'static str)> {
    match page {
        0 => attr_start_page0(token),
        1 => attr_start_page1(token),
        _ => None,
    }
}

fn attr_start_page0(token: u8) -> Option<(&'static str, &'static str)> {
    let name = match token {
        0x05 => return Some(("name", "")),
        0x06 => return Some(("value", "")),
        0x45 => return Some(("version", "")),
        0x46 => return Some(("version", "1.0")),
        0x50 => return Some(("type", "")),
        0x51 => return Some(("type", "PXLOGICAL")),
        0x52 => return Some(("type", "PXPHYSICAL")),
        0x53 => return Some(("type", "PORT")),
        0x54 => return Some(("type", "VALIDITY")),
        0x55 => return Some(("type", "NAPDEF")),
        0x56 => return Some(("type", "BOOTSTRAP")),
        0x57 => return Some(("type", "VENDORCONFIG")),
        0x58 => return Some(("type", "CLIENTIDENTITY")),
        0x59 => return Some(("type", "PXAUTHINFO")),
        0x5A => return Some(("type", "NAPAUTHINFO")),
        0x5B => return Some(("type", "ACCESS")),
        0x07 => "NAME",
        0x08 => "NAP-ADDRESS",
        0x09 => "NAP-ADDRTYPE",
        0x0A => "CALLTYPE",
        0x0B => "VALIDUNTIL",
        0x0C => "AUTHTYPE",
        0x0D => "AUTHNAME",
        0x0E => "AUTHSECRET",
        0x0F => "LINGER",
        0x10 => "BEARER",
        0x11 => "NAPID",
        0x12 => "COUNTRY",
        0x13 => "NETWORK",
        0x14 => "INTERNET",
        0x15 => "PROXY-ID",
        0x16 => "PROXY-PROVIDER-ID",
        0x17 => "DOMAIN",
        0x18 => "PROVURL",
        0x19 => "PXAUTH-TYPE",
        0x1A => "PXAUTH-ID",
        0x1B => "PXAUTH-PW",
        0x1C => "STARTPAGE",
        0x1D => "BASAUTH-ID",
        0x1E => "BASAUTH-PW",
        0x1F => "PUSHENABLED",
        0x20 => "PXADDR",
        0x21 => "PXADDRTYPE",
        0x22 => "TO-NAPID",
        0x23 => "PORTNBR",
        0x24 => "SERVICE",
        0x25 => "LINKSPEED",
        0x26 => "DNLINKSPEED",
        0x27 => "LOCAL-ADDR",
        0x28 => "LOCAL-ADDRTYPE",
        0x29 => "CONTEXT-ALLOW",
        0x2A => "TRUST",
        0x2B => "MASTER",
        0x2C => "SID",
        0x2D => "SOC",
        0x2E => "WSP-VERSION",
        0x2F => "PHYSICAL-PROXY-ID",
        0x30 => "CLIENT-ID",
        0x31 => "DELIVERY-ERR-SDU",
        0x32 => "DELIVERY-ORDER",
        0x33 => "TRAFFIC-CLASS",
        0x34 => "MAX-SDU-SIZE",
        0x35 => "MAX-BITRATE-UPLINK",
        0x36 => "MAX-BITRATE-DNLINK",
        0x37 => "RESIDUAL-BER",
        0x38 => "SDU-ERROR-RATIO",
        0x39 => "TRAFFIC-HANDL-PRIO",
        0x3A => "TRANSFER-DELAY",
        0x3B => "GUARANTEED-BITRATE-UPLINK",
        0x3C => "GUARANTEED-BITRATE-DNLINK",
        0x3D => "PXADDR-FQDN",
        0x3E => "PROXY-PW",
        0x3F => "PPGAUTH-TYPE",
        0x47 => "PULLENABLED",
        0x48 => "DNS-ADDR",
        0x49 => "MAX-NUM-RETRY",
        0x4A => "FIRST-RETRY-TIMEOUT",
        0x4B => "REREG-THRESHOLD",
        0x4C => "T-BIT",
        0x4E => "AUTH-ENTITY",
        0x4F => "SPI",
        _ => return None,
    };
    Some(("name", name))
}

fn attr_start_page1(token: u8) -> Option<(&'static str, &'static str)> {
    let name = match token {
        0x05 => return Some(("name", "")),
        0x06 => return Some(("value", "")),
        0x50 => return Some(("type", "")),
        0x53 => return Some(("type", "PORT")),
        0x55 => return Some(("type", "APPLICATION")),
        0x56 => return Some(("type", "APPADDR")),
        0x57 => return Some(("type", "APPAUTH")),
        0x58 => return Some(("type", "CLIENTIDENTITY")),
        0x59 => return Some(("type", "RESOURCE")),
        0x07 => "NAME",
        0x14 => "INTERNET",
        0x1C => "STARTPAGE",
        0x22 => "TO-NAPID",
        0x23 => "PORTNBR",
        0x24 => "SERVICE",
        0x2E => "AACCEPT",
        0x2F => "AAUTHDATA",
        0x30 => "AAUTHLEVEL",
        0x31 => "AAUTHNAME",
        0x32 => "AAUTHSECRET",
        0x33 => "AAUTHTYPE",
        0x34 => "ADDR",
        0x35 => "ADDRTYPE",
        0x36 => "APPID",
        0x37 => "APROTOCOL",
        0x38 => "PROVIDER-ID",
        0x39 => "TO-PROXY",
        0x3A => "URI",
        0x3B => "RULE",
        _ => return None,
    };
    Some(("name", name))
}

/// Text of an attribute value token (0x85 and above) on a code page.
pub(crate) fn attr_value(page: u8, token: u8) -> Option<&'static str> {
    match page {
        0 => attr_value_page0(token),
        1 => attr_value_page1(token),
        _ => None,
    }
}

fn attr_value_page0(token: u8) -> Option<&'static str> {
    Some(match token {
        // ADDRTYPE
        0x85 => "IPV4",
        0x86 => "IPV6",
        0x87 => "E164",
        0x88 => "ALPHA",
        0x89 => "APN",
        0x8A => "SCODE",
        0x8B => "TETRA-ITSI",
        0x8C => "MAN",
        // CALLTYPE
        0x90 => "ANALOG-MODEM",
        0x91 => "V.120",
        0x92 => "V.110",
        0x93 => "X.31",
        0x94 => "BIT-TRANSPARENT",
        0x95 => "DIRECT-ASYNCHRONOUS-DATA-SERVICE",
        // AUTHTYPE / PXAUTH-TYPE
        0x9A => "PAP",
        0x9B => "CHAP",
        0x9C => "HTTP-BASIC",
        0x9D => "HTTP-DIGEST",
        0x9E => "WTLS-SS",
        0x9F => "MD5",
        // BEARER
        0xA2 => "GSM-USSD",
        0xA3 => "GSM-SMS",
        0xA4 => "ANSI-136-GUTS",
        0xA5 => "IS-95-CDMA-SMS",
        0xA6 => "IS-95-CDMA-CSD",
        0xA7 => "IS-95-CDMA-PACKET",
        0xA8 => "ANSI-136-CSD",
        0xA9 => "ANSI-136-GPRS",
        0xAA => "GSM-CSD",
        0xAB => "GSM-GPRS",
        0xAC => "AMPS-CDPD",
        0xAD => "PDC-CSD",
        0xAE => "PDC-PACKET",
        0xAF => "IDEN-SMS",
        0xB0 => "IDEN-CSD",
        0xB1 => "IDEN-PACKET",
        0xB2 => "FLEX/REFLEX",
        0xB3 => "PHS-SMS",
        0xB4 => "PHS-CSD",
        0xB5 => "TETRA-SDS",
        0xB6 => "TETRA-PACKET",
        0xB7 => "ANSI-136-GHOST",
        0xB8 => "MOBITEX-MPAK",
        0xB9 => "CDMA2000-1X-SIMPLE-IP",
        0xBA => "CDMA2000-1X-MOBILE-IP",
        // LINKSPEED
        0xC5 => "AUTOBAUDING",
        // SERVICE
        0xCA => "CL-WSP",
        0xCB => "CO-WSP",
        0xCC => "CL-SEC-WSP",
        0xCD => "CO-SEC-WSP",
        0xCE => "CL-SEC-WTA",
        0xCF => "CO-SEC-WTA",
        0xD0 => "OTA-HTTP-TO",
        0xD1 => "OTA-HTTP-TLS-TO",
        0xD2 => "OTA-HTTP-PO",
        0xD3 => "OTA-HTTP-TLS-PO",
        // AUTH-ENTITY
        0xE0 => "AAA",
        0xE1 => "HA",
        _ => return None,
    })
}

fn attr_value_page1(token: u8) -> Option<&'static str> {
    Some(match token {
        // ADDRTYPE
        0x86 => "IPV6",
        0x87 => "E164",
        0x88 => "ALPHA",
        0x8D => "APPSRV",
        0x8E => "OBEX",
        // AAUTHTYPE
        0x90 => ",",
        0x91 => "HTTP-",
        0x92 => "BASIC",
        0x93 => "DIGEST",
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design
mod tests {
    use super::*;

    /// No table entry may sit on a WBXML global token: the decoder would never see it.
    #[test]
    fn no_entry_shadows_a_global_token() {
        let global = |t: u8| matches!(t & 0x3F, 0x00..=0x04);
        for page in 0..=1 {
            for token in 0..=255u8 {
                if global(token) {
                    assert!(attr_start(page, token).is_none(), "{page} {token:#x}");
                    assert!(attr_value(page, token).is_none(), "{page} {token:#x}");
                }
                if token < 0x80 {
                    assert!(attr_value(page, token).is_none());
                } else {
                    assert!(attr_start(page, token).is_none());
                }
            }
        }
        assert_eq!(tag(1, 0x05), None);
        assert_eq!(attr_start(1, 0x36), Some(("name", "APPID")));
        assert_eq!(attr_start(0, 0x3D), Some(("name", "PXADDR-FQDN")));
        assert_eq!(attr_value(0, 0x87), Some("E164"));
        assert_eq!(attr_value(1, 0x85), None);
    }
}
