//! The workspace's binaries (`tether-agent`, later `tether-master` and `tetherctl`).
//!
//! A test binary can only name its own package's executables (`CARGO_BIN_EXE_*`), so the
//! others are found in the target directory the test itself was built into (its executable
//! lives in `<target>/<profile>/deps/`), which also honours `CARGO_TARGET_DIR`. Each package is
//! built once per test process with `cargo build -p PACKAGE --bins` (a no-op when nothing
//! changed): running a binary left over from an older source would test old code.
//! `TETHER_<NAME>_BIN` (e.g. `TETHER_AGENT_BIN`) points a test at another binary, such as a
//! release or cross build, and skips the build.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Longest a build may take before the test gives up (a cold build on two shared cores).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinError {
    UnknownBinary(String),
    /// The test executable is not inside a cargo target directory.
    NoTargetDir(PathBuf),
    Build(String),
    Missing(PathBuf),
}

impl std::fmt::Display for BinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnknownBinary(n) => write!(f, "no workspace binary named `{n}`"),
            Self::NoTargetDir(p) => write!(f, "{} is not in a cargo target dir", p.display()),
            Self::Build(e) => write!(f, "build failed: {e}"),
            Self::Missing(p) => write!(f, "{} does not exist after the build", p.display()),
        }
    }
}

impl std::error::Error for BinError {}

/// The package that builds `name`.
fn package_of(name: &str) -> Option<&'static str> {
    match name {
        "tether-agent" => Some("tether-agent"),
        "tether-master" => Some("tether-master"),
        "tetherctl" => Some("tether-cli"),
        _ => None,
    }
}

/// `<target>/<profile>`, from this test's own executable.
pub fn profile_dir() -> Result<PathBuf, BinError> {
    let exe = std::env::current_exe().map_err(|e| BinError::Build(e.to_string()))?;
    let deps = exe
        .parent()
        .filter(|d| d.file_name().is_some_and(|n| n == "deps"))
        .ok_or_else(|| BinError::NoTargetDir(exe.clone()))?;
    deps.parent()
        .map(Path::to_path_buf)
        .ok_or(BinError::NoTargetDir(exe))
}

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The path of workspace binary `name`, built if needed (once per process and package).
pub fn binary(name: &str) -> Result<PathBuf, BinError> {
    let env_key = format!(
        "TETHER_{}_BIN",
        name.trim_start_matches("tether-").to_uppercase()
    );
    if let Some(path) = std::env::var_os(&env_key) {
        return Ok(PathBuf::from(path));
    }
    let package = package_of(name).ok_or_else(|| BinError::UnknownBinary(name.into()))?;
    let dir = profile_dir()?;
    static BUILT: OnceLock<Mutex<HashMap<&'static str, Result<(), BinError>>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    // Held across the build: parallel tests wait for one build instead of starting several.
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    let result = built
        .entry(package)
        .or_insert_with(|| build(package, &dir))
        .clone();
    drop(built);
    let path = dir.join(name);
    match result {
        Ok(()) if path.exists() => Ok(path),
        Ok(()) => Err(BinError::Missing(path)),
        // A failed build (no cargo, no network for a first build) still lets an existing
        // binary run, with a warning.
        Err(e) if path.exists() => {
            eprintln!("warning: {e}; using the existing {}", path.display());
            Ok(path)
        }
        Err(e) => Err(e),
    }
}

fn build(package: &str, profile_dir: &Path) -> Result<(), BinError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "-p", package, "--bins"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    // A file, not a pipe: a long error report must not fill a pipe nobody reads yet.
    let log_path = std::env::temp_dir().join(format!(
        "tether-e2e-build-{package}-{}.log",
        std::process::id()
    ));
    let log = std::fs::File::create(&log_path)
        .map_err(|e| BinError::Build(format!("{}: {e}", log_path.display())))?;
    cmd.stderr(log);
    // The target dir is the one this test was built into, whatever configured it.
    if let Some(target) = profile_dir.parent() {
        cmd.env("CARGO_TARGET_DIR", target);
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| BinError::Build(format!("cannot run cargo: {e}")))?;
    let deadline = Instant::now() + BUILD_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let err = std::fs::read_to_string(&log_path).unwrap_or_default();
                let _ = std::fs::remove_file(&log_path);
                if status.success() {
                    return Ok(());
                }
                return Err(BinError::Build(format!(
                    "cargo build -p {package}: {status}\n{err}"
                )));
            }
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BinError::Build(format!(
                    "cargo build -p {package} took longer than {BUILD_TIMEOUT:?}"
                )));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(BinError::Build(e.to_string())),
        }
    }
}
