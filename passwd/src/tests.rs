use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::*;

/// Made by `mosquitto_passwd -b -c FILE pi-1 secret` (2.0.11).
const MOSQUITTO_7: &str = "$7$101$p3whw26mBGuFqGf0$y6a5hGEjxQpCc3DlXZv/9RCp8sTskX2C9DsuDH4DenyBGwHzTqYbXXzCjUUoI52WuVZZEsJvaji/CfK8iWeePA==";
/// Made by `mosquitto_passwd -H sha512 -b FILE pi-2 secret2`.
const MOSQUITTO_6: &str = "$6$Psd6l2qbv7Ip+GC6$avBHnKiXfu1ulwUOFb7SRNt7YG8tHM3mWDWN/+6v6h2qf7hACqymTFC2jOaE9m4sgX1pgfGfWRQnX3thHCmnog==";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn pbkdf2_matches_the_published_sha512_vectors() {
    for (password, salt, iterations, expected) in [
        (
            &b"password"[..],
            &b"salt"[..],
            1,
            "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce",
        ),
        (
            b"password",
            b"salt",
            2,
            "e1d9c16aa681708a45f5c7c4e215ceb66e011a2e9f0040713f18aefdb866d53cf76cab2868a39b9f7840edce4fef5a82be67335c77a6068e04112754f27ccf4e",
        ),
        (
            b"passwordPASSWORDpassword",
            b"saltSALTsaltSALTsaltSALTsaltSALTsalt",
            4096,
            "8c0511f4c6e597c6ac6315d8f0362e225f3c501495ba23b868c005174dc4ee71115b59f9e60cd9532fa33e0f75aefe30225c583a186cd82bd4daea9724a3d3b8",
        ),
    ] {
        let iterations = std::num::NonZeroU32::new(iterations).unwrap();
        assert_eq!(hex(&pbkdf2(password, salt, iterations)), expected);
    }
}

#[test]
fn mosquitto_hashes_checked_in_verify() {
    let seven = Stored::parse(MOSQUITTO_7).unwrap();
    assert!(matches!(seven, Stored::Pbkdf2 { iterations: 101, ref salt, .. } if salt.len() == 12));
    assert!(seven.verify("secret"));
    assert!(!seven.verify("Secret"));
    assert!(!seven.verify(""));
    let six = Stored::parse(MOSQUITTO_6).unwrap();
    assert!(six.verify("secret2"));
    assert!(!six.verify("secret"));
}

#[test]
fn written_hashes_read_back_and_longer_passwords_than_a_block_work() {
    let line = hashed("pw 1:$x", b"0123456789ab");
    assert!(line.starts_with("$7$101$MDEyMzQ1Njc4OWFi$"), "{line}");
    let stored = Stored::parse(&line).unwrap();
    assert!(stored.verify("pw 1:$x") && !stored.verify("pw 1:$"));
    // A password above HMAC's 128-byte block is hashed into the key (checked against
    // Python's hashlib.pbkdf2_hmac).
    let long = "x".repeat(200);
    assert_eq!(
        hashed(&long, b"0123456789ab"),
        "$7$101$MDEyMzQ1Njc4OWFi$zOsMTG1S4Iv0238XI7FnIDYOJnHSGd6BjPYKr5WunUPzpfgB+lWfOSXqkhxX5ugPhb5smwZ92l5/4+yn2RVl6g=="
    );
}

#[test]
fn plain_passwords_compare_whole() {
    let plain = Stored::parse("abc:d").unwrap();
    assert!(plain.is_plain() && plain.verify("abc:d"));
    for wrong in ["abc", "abc:d ", "", "abc:e"] {
        assert!(!plain.verify(wrong), "{wrong:?}");
    }
    assert!(!Stored::parse(MOSQUITTO_7).unwrap().is_plain());
    assert_eq!(format!("{plain:?}"), "Plain(..)", "no secret in logs");
}

#[test]
fn malformed_hashes_are_errors_that_say_why() {
    let (salt, hash) = ("p3whw26mBGuFqGf0", &MOSQUITTO_7[24..]);
    for (text, what) in [
        (format!("$7$0${salt}${hash}"), "at least 1"),
        (format!("$7$10001${salt}${hash}"), "above the cap of 10000"),
        (
            format!("$7$99999999999999999999${salt}${hash}"),
            "above the cap",
        ),
        (format!("$7$+101${salt}${hash}"), "not a number"),
        (format!("$7$${salt}${hash}"), "not a number"),
        (format!("$7$101$!!!${hash}"), "salt is not base64"),
        (format!("$7$101$${hash}"), "salt of 0 bytes"),
        (format!("$7$101${salt}$AAAA"), "hash of 3 bytes"),
        (format!("$7$101${salt}$Zm9v"), "expected 64"),
        (
            format!("$7$101${salt}${}", &hash[..hash.len() - 2]),
            "hash is not base64",
        ),
        (
            format!("$7$101${salt}"),
            "expected `$7$iterations$salt$hash`",
        ),
        (format!("$7$101${salt}${hash}$"), "4 fields"),
        (format!("$6${salt}"), "expected `$6$salt$hash`"),
        ("$5$abc$def".into(), "unknown hash scheme `$5$`"),
        ("$".into(), "unknown hash scheme `$$`"),
    ] {
        let err = Stored::parse(&text).unwrap_err().to_string();
        assert!(err.contains(what), "{text:?}: {err}");
    }
}

/// `mosquitto_passwd` at test time, both of its schemes, with a password holding `:` and `$`.
#[test]
fn hashes_made_by_mosquitto_passwd_now_verify() {
    let tool = "/usr/bin/mosquitto_passwd";
    if !Path::new(tool).exists() {
        eprintln!(
            "SKIPPED: {tool} not installed (apt-get install mosquitto); checked-in vectors still ran"
        );
        return;
    }
    let dir = std::env::temp_dir().join(format!("tether-passwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("passwd");
    for (scheme, prefix) in [("sha512-pbkdf2", "$7$101$"), ("sha512", "$6$")] {
        let status = Command::new(tool)
            .args(["-H", scheme, "-b", "-c"])
            .arg(&file)
            .args(["pi-1", "a:b$c d"])
            .status()
            .unwrap();
        assert!(status.success());
        let text = std::fs::read_to_string(&file).unwrap();
        let stored = text.trim_end().strip_prefix("pi-1:").unwrap();
        assert!(stored.starts_with(prefix), "{text}");
        let stored = Stored::parse(stored).unwrap();
        assert!(stored.verify("a:b$c d"), "{scheme}: {text}");
        assert!(!stored.verify("a:b$c"), "{scheme}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// What one CONNECT's check costs, at mosquitto's default and at the cap (printed; run with
/// `--nocapture` to see it). The bound is loose: it catches an accidental quadratic, not a
/// slow machine.
#[test]
fn cost_of_one_verify() {
    for iterations in [ITERATIONS, MAX_ITERATIONS] {
        let stored = Stored::Pbkdf2 {
            iterations,
            salt: vec![7; SALT_LEN],
            hash: [0; HASH_LEN],
        };
        let rounds = if iterations == ITERATIONS { 200 } else { 2 };
        let start = Instant::now();
        for _ in 0..rounds {
            assert!(!stored.verify("a wrong password"));
        }
        let each = start.elapsed() / rounds;
        println!("verify, {iterations} iterations: {} us", each.as_micros());
        assert!(each.as_secs() < 5, "{iterations} iterations took {each:?}");
    }
}

/// Mangled copies of real hashes (bytes replaced, cut, or `$` and base64 padding moved in):
/// each is a value or an error, never a panic, and what parses verifies without one.
#[test]
fn mangled_hashes_never_panic() {
    let alphabet = b"$7601+/=Aaz9!:";
    // xorshift: deterministic, no crate needed.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let (mut parsed, mut refused) = (0, 0);
    for i in 0..20_000 {
        let mut text = if i % 2 == 0 { MOSQUITTO_7 } else { MOSQUITTO_6 }
            .as_bytes()
            .to_vec();
        for _ in 0..1 + next(3) {
            let at = next(text.len());
            match next(3) {
                0 => text[at] = alphabet[next(alphabet.len())],
                1 => text.truncate(at),
                _ => text.insert(at, alphabet[next(alphabet.len())]),
            }
            if text.is_empty() {
                break;
            }
        }
        let text = String::from_utf8(text).expect("ASCII in, ASCII out");
        match Stored::parse(&text) {
            Ok(stored) => {
                parsed += 1;
                if parsed % 50 == 0 {
                    let _ = stored.verify("secret");
                }
            }
            Err(_) => refused += 1,
        }
    }
    assert!(
        parsed > 0 && refused > 0,
        "{parsed} parsed, {refused} refused"
    );
}
