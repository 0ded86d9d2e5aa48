//! The allowlist's decision: exact programs, directories, relative names and `..`.

use tether_core::allowlist::{ALLOWLIST_BYTES, Allowlist, PathError, check_path};

fn list() -> Allowlist {
    Allowlist::from_entries(["/usr/bin/python3", "/opt/tasks/"]).unwrap()
}

#[test]
fn an_exact_entry_allows_that_program_only() {
    let l = list();
    assert!(l.allows("/usr/bin/python3"));
    assert!(!l.allows("/usr/bin/python3.11"));
    assert!(!l.allows("/usr/bin/python"));
    assert!(!l.allows("/usr/bin/python3/x"));
    assert!(!l.allows("/usr/bin/sh"));
}

#[test]
fn a_directory_entry_allows_everything_below_it() {
    let l = list();
    assert!(l.allows("/opt/tasks/run.sh"));
    assert!(l.allows("/opt/tasks/deep/er/run"));
    assert!(
        !l.allows("/opt/tasks/"),
        "the directory itself is no program"
    );
    assert!(!l.allows("/opt/tasks"));
    assert!(
        !l.allows("/opt/tasks-evil/run"),
        "a sibling sharing the prefix"
    );
    assert!(!l.allows("/opt/task"));
}

#[test]
fn relative_names_are_refused_with_an_allowlist() {
    let l = list();
    assert!(!l.allows("python3"));
    assert!(!l.allows("usr/bin/python3"));
    assert!(!l.allows("./opt/tasks/run"));
    assert!(!l.allows(""));
}

#[test]
fn dot_dot_never_climbs_out_of_a_directory() {
    let l = list();
    assert!(!l.allows("/opt/tasks/../../bin/sh"));
    assert!(
        !l.allows("/opt/tasks/sub/../run"),
        "refused even when it stays inside"
    );
    assert!(!l.allows("/opt/tasks/.."));
    // `..` inside a name is no component.
    assert!(l.allows("/opt/tasks/a..b"));
    assert!(l.allows("/opt/tasks/..hidden"));
}

#[test]
fn entries_are_checked() {
    assert_eq!(check_path("bin/sh"), Err(PathError::NotAbsolute));
    assert_eq!(check_path("/opt/../bin/"), Err(PathError::DotDot));
    assert_eq!(check_path("/usr/bin/env"), Ok(()));
    let mut l = Allowlist::new();
    assert_eq!(l.push("sh"), Err(PathError::NotAbsolute));
    assert_eq!(l.push("/opt/x/../"), Err(PathError::DotDot));
    assert_eq!(l.push("/a\0b"), Err(PathError::InteriorNul));
    assert!(l.is_empty(), "a refused entry is not kept");
}

#[test]
fn the_size_bound_is_an_error_not_a_panic() {
    let long = format!("/{}", "x".repeat(200));
    let mut l = Allowlist::new();
    let mut kept = 0;
    let err = loop {
        match l.push(&long) {
            Ok(()) => kept += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err, PathError::TooLong);
    assert_eq!(kept, ALLOWLIST_BYTES / (long.len() + 1));
    assert_eq!(l.entries().count(), kept);
    assert!(l.allows(&long));
}

#[test]
fn an_empty_list_allows_nothing() {
    let l = Allowlist::new();
    assert!(!l.allows("/bin/true"));
}
