//! WBXML provisioning documents: decoding never panics, errors carry a byte offset
//! inside the input, and whatever decodes goes through whitelist extraction too.
#![no_main]

use cpmstore_server::push::tree::Location;
use cpmstore_server::push::{wbxml, whitelist};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match wbxml::parse(data) {
        Ok(doc) => {
            let _ = whitelist::extract(&doc, 1000);
        }
        Err(err) => match err.at {
            Location::Byte(offset) => assert!(offset <= data.len()),
            Location::Text { .. } => panic!("WBXML errors name byte offsets"),
        },
    }
});
