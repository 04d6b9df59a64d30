#![no_main]
//! Feeds the stream framer the input in chunks whose sizes come from the first byte, and checks
//! that the frames equal those of a single push.

use dialbridge_sip::message::Limits;
use dialbridge_sip::transport::StreamFramer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let limits = Limits {
        max_message_size: 4096,
        ..Limits::default()
    };
    let mut whole = StreamFramer::new(limits);
    whole.push(data);
    let expected: Vec<_> = whole.by_ref().collect();
    let mut chunked = StreamFramer::new(limits);
    let mut got = Vec::new();
    for chunk in data.chunks(step) {
        chunked.push(chunk);
        got.extend(chunked.by_ref());
    }
    // After an error the framer stops; errors may differ only in how much was buffered.
    let ok_prefix = |v: &Vec<Result<_, _>>| v.iter().take_while(|r: &&Result<_, _>| r.is_ok()).cloned().collect::<Vec<_>>();
    assert_eq!(ok_prefix(&got), ok_prefix(&expected));
});
