//! What authentication costs per message: the master signing a start command, an agent
//! verifying it (signature check and decode, as the agent does it), and an agent's MAC over an
//! event and the master's check of it. Prints microseconds per operation; asserts nothing.
//!
//!     cargo run --release -p tether-core --example auth_cost [ITERATIONS]
//!
//! Cross-built for the Pi targets it runs under qemu-user too (see scripts/pi/lib.sh for the
//! runners); figures there are qemu's, not a board's.

use std::hint::black_box;
use std::time::Instant;

use tether_core::auth::{MasterKeys, SigningKey, Verifier};
use tether_core::message::{
    Command, CommandBody, Event, EventKind, Message, Report, StrList, Stream, TaskRef, TaskSpec,
};
use tether_core::policy::Policy;
use tether_core::wire::{self, MAX_MESSAGE};

const CMD: &str = "tether/agent/pi-kitchen/cmd";
const EVENT: &str = "tether/agent/pi-kitchen/event";

fn start() -> Message {
    Message::Command(Command {
        epoch: 7,
        counter: 12_345,
        journal: 0x5eed_f00d,
        body: CommandBody::Start(TaskSpec {
            task: TaskRef {
                task: 42,
                attempt: 43,
            },
            policy: Policy::DEFAULT,
            start_at_unix_ms: None,
            argv: StrList::from_items(["/usr/bin/python3", "/opt/tether/tasks/read_sensor.py"])
                .expect("fits"),
            env: StrList::from_items(["SENSOR=bme280", "INTERVAL=10"]).expect("fits"),
            cwd: heapless::String::try_from("/var/lib/tether/work").expect("fits"),
        }),
    })
}

fn output_event() -> Message {
    Message::Event(Report {
        journal: 0x5eed_f00d,
        event: Event {
            seq: 1_000,
            at_unix_ms: 1_700_000_000_000,
            kind: EventKind::Output {
                task: TaskRef {
                    task: 42,
                    attempt: 43,
                },
                stream: Stream::Stdout,
                offset: 0,
                data: heapless::Vec::from_slice(&[b'x'; 200]).expect("fits"),
            },
        },
    })
}

/// Runs `f` `n` times and returns microseconds per run.
fn per_op(n: u32, mut f: impl FnMut()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn main() {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000);
    let key = SigningKey::from_seed([7; 32]).expect("seed");
    let keys = MasterKeys::from_keys(&[key.public_key()]).expect("key");
    let agent_key = [9u8; 32];
    let (cmd, event) = (start(), output_event());
    let mut buf = [0u8; MAX_MESSAGE];

    let plain = wire::encode(&cmd, &mut buf).expect("fits").len();
    let signed = wire::encode_signed(&cmd, CMD, &key, &mut buf)
        .expect("fits")
        .to_vec();
    let maced = wire::encode_mac(&event, EVENT, &agent_key, &mut buf)
        .expect("fits")
        .to_vec();

    let mut scratch = [0u8; MAX_MESSAGE];
    let encode_plain = per_op(n, || {
        black_box(wire::encode(black_box(&cmd), &mut scratch).expect("fits"));
    });
    let sign = per_op(n, || {
        black_box(wire::encode_signed(black_box(&cmd), CMD, &key, &mut scratch).expect("fits"));
    });
    let decode_plain = per_op(n, || {
        black_box(wire::decode(black_box(&signed)).expect("valid"));
    });
    let verify = per_op(n, || {
        black_box(
            wire::decode_verified(black_box(&signed), CMD, Verifier::Master(&keys)).expect("valid"),
        );
    });
    let mac = per_op(n, || {
        black_box(
            wire::encode_mac(black_box(&event), EVENT, &agent_key, &mut scratch).expect("fits"),
        );
    });
    let mac_check = per_op(n, || {
        black_box(
            wire::decode_verified(black_box(&maced), EVENT, Verifier::Agent(&agent_key))
                .expect("valid"),
        );
    });

    println!("target {} ({} iterations)", std::env::consts::ARCH, n);
    println!(
        "start command: {plain} B plain, {} B signed; output event: {} B with its MAC",
        signed.len(),
        maced.len()
    );
    println!("  encode, no auth            {encode_plain:8.2} us");
    println!("  encode + ed25519 sign      {sign:8.2} us   (master, per command)");
    println!("  decode, no auth            {decode_plain:8.2} us");
    println!("  ed25519 verify + decode    {verify:8.2} us   (agent, per command)");
    println!("  encode + HMAC-SHA-512/128  {mac:8.2} us   (agent, per event)");
    println!("  HMAC check + decode        {mac_check:8.2} us   (master, per event)");
}
