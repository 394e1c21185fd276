//! URIs, P-Asserted-Identity values and X-Push-Origin-SMSC: parsing never panics; a
//! parsed URI is equivalent to itself and to the re-parse of its normalised text.
#![no_main]

use cpmstore_server::push::parse_smsc_header;
use cpmstore_server::push::sip_uri::{Uri, parse_pai};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(uri) = Uri::parse(text) {
        assert!(uri.equivalent(&uri));
        let again = Uri::parse(&uri.to_string());
        assert!(again.is_ok_and(|again| again.equivalent(&uri)), "{text:?}");
    }
    let _ = parse_pai(text);
    let _ = parse_smsc_header(text);
});
