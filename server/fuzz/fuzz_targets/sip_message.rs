//! SIP messages from the network: parsing, stream framing and building a response never
//! panic; a frame found on a stream is never refused as too large when parsed, and
//! its body is the framed length.
#![no_main]

use cpmstore_server::sip::message::{self, Message, ParseError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    const MAX_BODY: usize = 4096;
    if let Ok(Message::Request(request)) = message::parse(data, MAX_BODY) {
        let _ = request.check_mandatory();
        let peer = "192.0.2.1:5060".parse().expect("a socket address");
        let _ = message::response(&request, 200, peer, "tag", &[("Allow", "MESSAGE")]);
    }
    if let Ok(Some((head, body))) = message::frame(data, MAX_BODY) {
        assert!(head + body <= data.len());
        match message::parse(&data[..head + body], MAX_BODY) {
            Ok(Message::Request(request)) => assert_eq!(request.body.len(), body),
            Ok(Message::Response) => {}
            Err(e) => assert!(!matches!(e, ParseError::TooLarge { .. }), "{e}"),
        }
    }
});
