//! Broker addresses (agent config, master `--broker`, `tetherctl provision`) over arbitrary text:
//! parsing never panics, and a parsed address formats to text that parses to the same address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_core::broker_addr::BrokerAddr;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = core::str::from_utf8(data) else {
        return;
    };
    if let Ok(addr) = BrokerAddr::parse(text) {
        let formatted = addr.to_string();
        assert_eq!(
            BrokerAddr::parse(&formatted),
            Ok(addr),
            "{text:?} -> {formatted}"
        );
    }
});
