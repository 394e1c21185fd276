//! XML provisioning documents: parsing never panics, errors carry a line and column,
//! and whatever parses goes through whitelist extraction too.
#![no_main]

use cpmstore_server::push::tree::Location;
use cpmstore_server::push::{whitelist, xml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match xml::parse(data) {
        Ok(doc) => {
            let _ = whitelist::extract(&doc, 1000);
        }
        Err(err) => assert!(matches!(err.at, Location::Text { .. })),
    }
});
