//! `tetherctl` against the real master and a real agent: `submit --wait` streams the task's
//! output and exits with its exit code; `tasks --state` filters; `show` reads for people.

use std::process::Command;

use tether_tests::harness::bins::binary;
use tether_tests::harness::fleet::Fleet;

fn tetherctl(fleet: &Fleet, args: &[&str]) -> (Option<i32>, String, String) {
    let master = fleet.master();
    let out = Command::new(binary("tetherctl").expect("tetherctl"))
        .env("TETHER_MASTER", format!("http://{}", master.http))
        .env("TETHER_TOKEN", &master.token)
        .args(args)
        .output()
        .expect("tetherctl runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_wait_streams_the_output_and_exits_with_the_tasks_code() {
    let fleet = Fleet::start(&["cli-1"], 1_000).await;
    let submit = |script: &str| {
        let args = [
            "submit", "--wait", "--agent", "cli-1", "--", "/bin/sh", "-c", script,
        ];
        tetherctl(&fleet, &args)
    };
    let (code, out, err) = submit("echo first; echo second");
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "first\nsecond\n");
    let (code, out, err) = submit("echo partial; exit 3");
    assert_eq!(code, Some(3), "{out} {err}");
    assert!(err.contains("failed: exit 3"), "{err}");
    let (code, _, err) = submit("kill -9 $$");
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("signal 9"), "{err}");

    let (code, out, _) = tetherctl(&fleet, &["tasks", "--state", "failed"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        out.lines().count(),
        3,
        "a header and two failed tasks:\n{out}"
    );
    let (code, out, _) = tetherctl(&fleet, &["tasks", "--limit", "1"]);
    assert_eq!((code, out.lines().count()), (Some(0), 2), "{out}");
    let (code, _, err) = tetherctl(&fleet, &["tasks", "--state", "sleepy"]);
    assert!(code != Some(0) && err.contains("not a task state"), "{err}");
    let (code, out, _) = tetherctl(&fleet, &["show", "1"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("succeeded") && out.contains("   first"),
        "{out}"
    );
}
