//! `tetherctl` against the real master and a real agent: `submit --wait` streams the task's
//! output and exits with its exit code; `tasks --state` filters; `show` reads for people;
//! `logs [-f]` gives the bytes the task wrote; `watch` prints changes from the event stream.

use tether_tests::harness::fleet::Fleet;

fn tetherctl(fleet: &Fleet, args: &[&str]) -> (Option<i32>, String, String) {
    fleet.tetherctl(args)
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

/// `tetherctl` with the fleet's master and token, stdout piped, for commands that run on.
fn tetherctl_child(fleet: &Fleet, args: &[&str]) -> std::process::Child {
    fleet
        .tetherctl_command()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tetherctl runs")
}

/// Output is the bytes the task wrote: a UTF-8 character written in two pieces, a second
/// apart (so in two output events), reaches `logs` and `logs -f` whole, and stderr goes to
/// stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_streams_are_the_tasks_bytes() {
    let fleet = Fleet::start(&["cli-2"], 1_000).await;
    let script = r"printf 'caf\303'; sleep 1; printf '\251\n'; echo oops >&2; sleep 1; echo done";
    let id = fleet.master().submit(&serde_json::json!({
        "agent": "cli-2", "argv": ["/bin/sh", "-c", script], "cwd": "/tmp",
    }));
    // Followed while it runs: the command ends with the task.
    let follow = tetherctl_child(&fleet, &["logs", "-f", &id.to_string()]);
    let followed = tokio::task::spawn_blocking(move || follow.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(followed.status.success(), "{followed:?}");
    assert_eq!(String::from_utf8(followed.stdout).unwrap(), "café\ndone\n");
    assert_eq!(String::from_utf8(followed.stderr).unwrap(), "oops\n");
    // Read after it ended, from the stored bytes.
    let (code, out, err) = tetherctl(&fleet, &["logs", &id.to_string()]);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (Some(0), "café\ndone\n", "oops\n")
    );
    let (code, out, err) = tetherctl(&fleet, &["logs", "424242"]);
    assert!(
        code != Some(0) && out.is_empty() && err.contains("404"),
        "{err}"
    );
}

/// `watch` prints the fleet, then each change as the master commits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_changes_as_they_happen() {
    use std::io::BufRead as _;
    let fleet = Fleet::start(&["cli-3"], 1_000).await;
    let mut watch = tetherctl_child(&fleet, &["watch"]);
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let mut wait_for = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !lines.iter().any(|l: &String| l.contains(want)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => lines.push(line),
                Err(_) => panic!("no line with {want:?} from watch:\n{}", lines.join("\n")),
            }
        }
    };
    wait_for("agent cli-3: online (available)");
    let id = fleet.master().submit(&serde_json::json!({
        "agent": "cli-3", "argv": ["/bin/true"], "cwd": "/tmp",
    }));
    wait_for(&format!("task {id}: attempt "));
    wait_for(&format!("task {id}: succeeded"));
    let _ = watch.kill();
    let _ = watch.wait();
}
