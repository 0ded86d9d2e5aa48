//! Topic parsing: the first byte splits the input into a prefix and a topic; whatever parses
//! must build back to the same topic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::topic::Topic;

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).min(rest.len());
    let (Ok(prefix), Ok(topic)) = (
        core::str::from_utf8(&rest[..split]),
        core::str::from_utf8(&rest[split..]),
    ) else {
        return;
    };
    if let Ok(parsed) = Topic::parse(prefix, topic) {
        let built = parsed.build(prefix).expect("a parsed topic builds");
        assert_eq!(built.as_str(), topic);
    }
});
