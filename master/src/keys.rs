//! The master's key material on disk: its ed25519 signing seed, and fresh random keys.
//!
//! The seed lives in `<data_dir>/master.key` (or a file given with `--signing-key`) as 64 hex
//! digits and a newline, mode 0600, created from the kernel's random pool on first start. Its
//! public half is what agents are configured with (`master_keys`).

use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tether_core::auth::{self, Hex, KEY_LEN, SigningKey};

/// `n` bytes from the kernel's random pool.
pub(crate) fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// A fresh 32-byte key (an agent's MAC key, or a signing seed).
pub(crate) fn new_key() -> io::Result<[u8; KEY_LEN]> {
    random_bytes()
}

/// Reads the signing key at `path`, creating it (0600, never overwriting) if it is missing.
pub(crate) fn load_or_create(path: &Path) -> Result<SigningKey, String> {
    let shown = path.display();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text).map_err(|e| format!("signing key {shown}: {e}")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let seed = new_key().map_err(|e| format!("random key for {shown}: {e}"))?;
            let key =
                SigningKey::from_seed(seed).map_err(|e| format!("signing key {shown}: {e}"))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| format!("creating signing key {shown}: {e}"))?;
            writeln!(file, "{}", Hex(&seed))
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("writing signing key {shown}: {e}"))?;
            Ok(key)
        }
        Err(e) => Err(format!("reading signing key {shown}: {e}")),
    }
}

/// A signing key file's text: 64 hex digits (surrounding whitespace ignored).
pub(crate) fn parse(text: &str) -> Result<SigningKey, String> {
    let seed = auth::parse_hex::<KEY_LEN>(text.trim()).map_err(|e| e.to_string())?;
    SigningKey::from_seed(seed).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let first = load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = load_or_create(&path).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        std::fs::write(&path, "not hex\n").unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(err.contains("hex digits"), "{err}");
    }
}
