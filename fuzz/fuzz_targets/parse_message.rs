#![no_main]
//! Parses and validates one datagram, then exercises every typed accessor on what was accepted.

use dialbridge_sip::message::{Limits, Message, NameAddr};
use dialbridge_sip::ua::sipfrag_status;
use dialbridge_sip::validate::{check_datagram, Policy, Verdict};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Message::parse(data);
    let verdict = check_datagram(data, &Limits::default(), &Policy::default());
    if let Verdict::Reject { response, .. } = &verdict {
        // The error response must itself be a well-formed message.
        if let Err(e) = Message::parse(&response.to_bytes()) {
            panic!("rejection does not parse: {e}");
        }
    }
    if let Verdict::Accept(m) = verdict {
        let h = m.headers();
        let _ = h.via();
        let _ = h.top_via_lenient();
        let _ = h.contact();
        let _ = h.p_asserted_identity();
        let _ = h.reason();
        let _ = h.session_expires();
        let _ = h.rseq();
        let _ = h.rack();
        let _ = h.min_se();
        let _ = h.supported();
        let _ = h.allow();
        let _ = h.accept();
        let _ = h.get("Refer-To").map(NameAddr::parse);
        let _ = sipfrag_status(m.body());
        // Serializing an accepted message must give a message that parses the same way
        // (Content-Length aside: serialization always writes the true one).
        let bytes = m.to_bytes();
        match Message::parse(&bytes) {
            Ok(mut again) => {
                let mut m = m;
                m.headers_mut().remove("Content-Length");
                again.headers_mut().remove("Content-Length");
                assert_eq!(again, m, "re-parse differs");
            }
            Err(e) => panic!("serialized message does not parse: {e}"),
        }
    }
});
